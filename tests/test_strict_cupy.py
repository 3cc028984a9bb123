"""The strict CuPy stand-in bites: one test per rule, each with a planted bug that runs on NumPy
and must fail (or be recorded) under the stand-in; its names against real CuPy's."""

from __future__ import annotations

import json
import pickle
import sys

import numpy as np
import pytest

import strict_cupy
from strict_cupy import make_names
from minidni import backend

pytestmark = pytest.mark.cupy
HERE = "tests/test_strict_cupy.py"


@pytest.fixture
def cp(standin_cupy):
    return standin_cupy


@pytest.fixture
def dev(cp):
    return cp.asarray(np.arange(6, dtype=np.float32).reshape(2, 3))


# -- planted bugs: each is correct NumPy code --------------------------------------------------
def host_sum(x):
    return np.asarray(x).sum()


def add_host_bias(x):
    return x + np.ones(x.shape[-1], x.dtype)


def reset_rows_from_host(x):
    x[...] = np.zeros(x.shape, x.dtype)


def clip_with_errstate(xp, x):
    with xp.errstate(over="ignore"):  # NumPy has errstate, CuPy does not
        return xp.clip(x, -1, 1)


def zeros_like_numpy(xp, x):
    return xp.zeros(x.shape, x.dtype, like=x)  # NumPy's keyword, not CuPy's


def stop_if_nonfinite(loss):
    if not np.isfinite(loss):  # bool() on a device value: a host sync in the hot loop
        raise FloatingPointError


# -- rule: device arrays are not NumPy arrays ----------------------------------------------------
def test_device_arrays_are_not_numpy_arrays(dev):
    assert not isinstance(dev, np.ndarray) and type(dev).__module__ == "cupy"
    assert host_sum(np.arange(3.0)) == 3.0  # the planted bug is fine on NumPy ...
    for implicit in (host_sum, np.array, lambda a: a.__array__()):
        with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
            implicit(dev)  # ... and refused on CuPy


def test_reductions_and_scalar_indexing_stay_on_the_device(cp, dev):
    for value in (dev.sum(), dev[1, 2], cp.sqrt(dev).max(), np.mean(dev)):
        assert type(value) is cp.ndarray and value.shape == ()
    assert strict_cupy.SYNCS.events == []


# -- rule: no host array inside a device op, ufunc or out= ---------------------------------------
def test_host_arrays_are_refused_in_ops_ufuncs_and_out(cp, dev):
    assert add_host_bias(np.zeros((2, 3), np.float32)).shape == (2, 3)
    host = np.ones((2, 3), np.float32)
    refused = {
        "operator": lambda: add_host_bias(dev),
        "reflected operator": lambda: host * dev,
        "in-place operator": lambda: dev.__iadd__(host),
        "cupy ufunc": lambda: cp.multiply(dev, host),
        "numpy ufunc on a device array": lambda: np.multiply(dev, host),
        "cupy function": lambda: cp.concatenate([dev, host]),
        "numpy function on device arrays": lambda: np.stack([dev, host]),
        "out= on the host": lambda: cp.add(dev, dev, out=host),
        "ufunc.at value": lambda: cp.add.at(dev, cp.asarray(np.array([0])), host[:1]),
        "method argument": lambda: dev.dot(host.T),
    }
    for what, call in refused.items():
        with pytest.raises(TypeError, match="host numpy.ndarray"):
            call()
            pytest.fail(f"{what} accepted a host array")
    # scalars, NumPy scalars and device out= are fine, as in CuPy
    out = cp.empty_like(dev)
    assert cp.add(dev, np.float32(2), out=out) is out and type(2.0 * dev) is cp.ndarray


def test_assigning_a_host_array_into_a_device_array_is_refused(cp, dev):
    reset_rows_from_host(np.ones((2, 3)))
    for planted in (reset_rows_from_host, lambda x: x.__setitem__(0, np.zeros(3, np.float32)),
                    lambda x: x.__setitem__(slice(None), [0.0, 1.0, 2.0])):
        with pytest.raises(TypeError, match=r"dev\[...\] = "):
            planted(dev)
    dev[...] = 0.0                                     # a scalar, a device array and host *indices* are fine
    dev[np.array([1])] = cp.asarray(np.ones((1, 3), np.float32))
    np.testing.assert_array_equal(dev.get(), [[0, 0, 0], [1, 1, 1]])


def scatter_add_with_plus_equals(x, idx, v):
    x[idx] += v  # NumPy: repeated indices lose updates, CuPy: undefined


def test_repeated_index_writes_are_refused(cp):
    xp_idx = np.array([0, 2, 0])
    scatter_add_with_plus_equals(np.zeros(3), xp_idx, np.ones(3))
    dev, ones = cp.zeros(3), cp.ones(3)
    for idx in (xp_idx, cp.asarray(xp_idx), [0, 2, 0]):
        with pytest.raises(ValueError, match="repeated indices.*cupy.add.at"):
            scatter_add_with_plus_equals(dev, idx, ones)
    dev[np.array([0, 2, 0])] = 5.0                     # one value for every target: defined
    scatter_add_with_plus_equals(dev, np.array([0, 1]), cp.ones(2))
    cp.add.at(dev, cp.asarray(xp_idx), ones)           # the defined scatter-add
    assert dev.get().tolist() == [8.0, 1.0, 6.0]


def running_sum_in_place(x):
    x[1:] += x[:-1]  # NumPy buffers the overlap; a GPU kernel reads what its neighbour already wrote


def center_on_first_row(x):
    x -= x[0]  # row 0 is read by every thread while thread 0 overwrites it


def test_outputs_that_overlap_their_inputs_are_refused(cp):
    running_sum_in_place(np.arange(4.0))
    with pytest.raises(ValueError, match="overlaps an input"):
        running_sum_in_place(cp.arange(4.0))
    dev = cp.asarray(np.arange(8.0).reshape(2, 4))
    for planted in (center_on_first_row, lambda x: cp.multiply(x[0], 2.0, out=x[:, 0]),
                    lambda x: cp.matmul(x[:, :2], x[:, :2], out=x[:, 1:3]),
                    lambda x: cp.matmul(x[:, :2], x[:, 2:], out=x[:, :2])):  # a GEMM never writes its input
        with pytest.raises(ValueError, match="overlaps an input"):
            planted(dev)
    dev += dev                                   # the same array in and out: fine, as on CuPy
    cp.add(dev[:, ::2], 1.0, out=dev[:, 1::2])   # interleaved but disjoint: fine
    dev[0] -= dev[0].copy()
    assert dev.get().tolist() == [[0, 0, 0, 0], [8, 9, 12, 13]]


def test_host_to_device_only_through_asarray_array_and_set(cp):
    host = np.arange(3.0)
    dev = cp.asarray(host)
    host[0] = 99.0  # a copy, not a view of host memory
    assert dev.get()[0] == 0.0 and cp.asarray(dev) is dev
    dev.set(np.full(3, 7.0))
    assert dev.get().tolist() == [7.0, 7.0, 7.0]
    with pytest.raises(ValueError, match="shape/dtype"):
        dev.set(np.zeros(3, np.float32))


# -- rule: only names (and signatures) real CuPy has -------------------------------------------
def test_names_real_cupy_lacks_do_not_exist(cp, dev):
    assert clip_with_errstate(np, np.arange(3.0)).tolist() == [0.0, 1.0, 1.0]
    with pytest.raises(AttributeError, match="has no attribute 'errstate'"):
        clip_with_errstate(cp, dev)
    for absent in ("resize", "setflags", "to_device"):  # NumPy ndarray methods CuPy lacks
        with pytest.raises(AttributeError, match="real CuPy has none"):
            getattr(dev, absent)
    assert cp.clip(dev, 1, 2).get().max() == 2


def test_calls_are_bound_against_real_cupy_signatures(cp, dev):
    assert zeros_like_numpy(np, np.ones(2)).shape == (2,)
    with pytest.raises(TypeError, match=r"cupy.zeros\(shape, dtype=None, order=None\).*'like'"):
        zeros_like_numpy(cp, dev)
    with pytest.raises(TypeError, match="cupy.ndarray.sum.*'where'"):
        dev.sum(where=True)  # NumPy's sum has where=, CuPy's has not
    with pytest.raises(TypeError, match="cupy.ndarray.astype"):
        dev.astype(np.float64, "C", "unsafe", True, True, "extra")


def test_every_name_the_stand_in_defines_is_a_real_cupy_name(cp):
    table = json.loads(make_names.OUT.read_text())["namespaces"]
    defined = {"": [n for n in vars(cp) if not n.startswith("_")],
               "cuda": [n for n in vars(cp.cuda) if not n.startswith("_")],
               "cuda.runtime": [n for n in vars(cp.cuda.runtime) if not n.startswith("_")],
               "cuda.Stream": [n for n in vars(cp.cuda.Stream) if not n.startswith("_")],
               "cuda.Event": [n for n in vars(cp.cuda.Event) if not n.startswith("_")],
               "cuda.Device": [n for n in vars(cp.cuda.Device) if not n.startswith("_")],
               "ufunc": [n for n in [*vars(cp.ufunc), *vars(cp.add)]
                         if n not in ("_u", "__dict__", "__weakref__", "__module__")],  # (every class has them)
               "ndarray": [n for n in vars(cp.ndarray)
                           if n not in ("_a", "_base", "__slots__", "__weakref__", "__getattr__")]}  # (the gate)
    for namespace, names in defined.items():
        missing = sorted(set(names) - set(table[namespace]))
        assert not missing, f"the stand-in defines cupy.{namespace} names real CuPy lacks: {missing}"
    assert cp.__version__ == json.loads(make_names.OUT.read_text())["cupy_version"]


def test_committed_names_match_real_cupy():
    """Regenerate the table from real CuPy (skips where it is not importable; no GPU needed)."""
    try:
        import cupy as real  # noqa: PLC0415
    except ImportError:
        pytest.skip("real CuPy is not importable here (pip install cupy-cuda12x; no GPU needed)")
    committed = json.loads(make_names.OUT.read_text())
    if real.__version__ != committed["cupy_version"]:
        pytest.skip(f"real CuPy {real.__version__} is not the {committed['cupy_version']} the table was made "
                    f"from (rerun tests/strict_cupy/make_names.py)")
    assert make_names.describe(real, np) == committed


# -- rule: host syncs are recorded with their call site ---------------------------------------------
def test_every_kind_of_host_sync_is_recorded_at_its_call_site(cp, dev):
    stop_if_nonfinite(np.float32(1.0))
    syncs = strict_cupy.SYNCS
    x = dev.sum()
    line = sys._getframe().f_lineno + 1
    float(x), int(x), bool(x), x.item(), dev.get(), dev.tolist(), cp.asnumpy(dev), repr(x), f"{x}"
    cp.cuda.Stream.null.synchronize(), cp.cuda.Device().synchronize(), cp.cuda.runtime.deviceSynchronize()
    copied = pickle.loads(pickle.dumps(dev))
    kinds = [e.kind for e in syncs.events]
    assert kinds == ["float()", "int()", "bool()", ".item()", ".get()", ".tolist()", "cupy.asnumpy", "repr()",
                     "format()", "Stream.synchronize", "Device.synchronize", "cuda.runtime.deviceSynchronize",
                     "pickle"]
    assert type(copied) is cp.ndarray and copied.tolist() == dev.tolist()
    assert {e.site for e in syncs.events[:9]} == {f"{HERE}:{line} in {sys._getframe().f_code.co_name}"}
    syncs.clear()
    stop_if_nonfinite(x)  # the planted bug: one sync, named at its line
    (event,) = syncs.events
    assert event.kind == "bool()" and event.site.startswith(f"{HERE}:") and "stop_if_nonfinite" in event.site


def test_backend_edges_are_charged_to_their_caller_and_regions_label_syncs(cp, dev):
    with strict_cupy.SYNCS.region("log"):
        backend.to_numpy(dev)
    backend.synchronize(cp)
    log, timer = strict_cupy.SYNCS.events
    assert log.kind == ".get()" and log.region == "log" and log.site.startswith(HERE)
    assert timer.kind == "Stream.synchronize" and timer.region is None and timer.site.startswith(HERE)
    assert strict_cupy.SYNCS.outside_regions() == [timer]


def test_event_times_need_the_end_event_synchronised(cp):
    start, end = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    end.record()
    with pytest.raises(cp.cuda.runtime.CUDARuntimeError, match="cudaErrorNotReady"):
        cp.cuda.get_elapsed_time(start, end)
    end.synchronize()
    assert cp.cuda.get_elapsed_time(start, end) >= 0.0
    assert [e.kind for e in strict_cupy.SYNCS.events] == ["Event.synchronize"]


# -- minidni.backend sees the stand-in as CuPy ---------------------------------------------------
def test_backend_recognises_the_stand_in_as_cupy(cp, dev):
    assert backend.cupy_available() and backend.set_backend("cupy") is cp
    assert backend.get_xp(dev) is cp and backend.get_xp(dev, np.float32(1.0), 2.0) is cp
    assert backend.backend_name() == "cupy"
    with pytest.raises(backend.BackendError, match="mixed"):
        backend.get_xp(dev, np.zeros(3))
    host = backend.to_numpy(backend.to_device({"w": np.ones(2, np.float32)}))["w"]
    assert isinstance(host, np.ndarray) and host.dtype == np.float32


def test_no_visible_device_is_the_no_gpu_error(cp):
    strict_cupy.set_device_count(0)
    assert not backend.cupy_available()
    with pytest.raises(backend.BackendError, match="no GPU is visible"):
        backend.set_backend("cupy")


def test_the_shim_puts_the_stand_in_into_a_fresh_process(tmp_path):
    """``PYTHONPATH=tests/strict_cupy/shim``: the command line as a user runs it, on the stand-in,
    its host syncs written to ``STRICT_CUPY_SYNCS`` at exit."""
    import os  # noqa: PLC0415
    import subprocess  # noqa: PLC0415

    shim = make_names.OUT.parent / "shim"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shim), os.environ.get("PYTHONPATH", "")]),
           "STRICT_CUPY_SYNCS": str(tmp_path / "syncs.json")}
    cmd = [sys.executable, "-m", "minidni.run", "copy", "--backend", "cupy", "--steps", "6", "--hidden", "8",
           "--batch", "4", "--log-every", "3", "--no-compare", "--no-progress", "--out", str(tmp_path / "out")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["backend"] == "cupy"
    syncs = json.loads((tmp_path / "syncs.json").read_text())
    assert any(e["kind"] == ".get()" and "collect_diagnostics" in e["site"] for e in syncs)
