"""Flat parameter buffers (layers hold views; the fused optimisers equal the per-tensor reference bit for bit)
and workspaces (the LSTM and the recurrent trainer stop allocating after the first windows)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from minidni import backend
from minidni.backend import to_numpy
from minidni.flat import ALIGN, FlatParams
from minidni.functional.lstm import lstm_backward, lstm_forward
from minidni.layers import LSTM, BatchNorm, Linear, ReLU, Sequential
from minidni.optim import CHUNK_BYTES, SGD, Adam, FlatAdam, FlatSGD, clip_by_global_norm
from minidni.workspace import Workspace

STEPS = 100


def _layers(dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return {"lstm": LSTM(5, 7, rng=rng, dtype=dtype), "head": Linear(7, 3, rng=rng, dtype=dtype),
            "net": Sequential([Linear(3, 4, rng=rng, dtype=dtype), BatchNorm(4, dtype=dtype), ReLU(),
                               Linear(4, 2, rng=rng, dtype=dtype)])}


def _params(layers):
    """The per-tensor reference's params: {"name.key": array} with the same keys FlatParams makes."""
    return {f"{n}.{k}": v for n, layer in layers.items() for k, v in layer.params.items()}


def _grads(params, rng, scale=1.0):
    return {k: (rng.standard_normal(p.shape) * scale).astype(p.dtype) for k, p in params.items()}


def test_layers_hold_views_into_one_buffer_per_dtype(xp):
    layers = _layers()
    before = {k: to_numpy(v).copy() for k, v in _params(layers).items()}
    flat = FlatParams(layers)
    assert list(flat.params) == list(before) and len(flat.params.buffers) == 1
    buffer = flat.params.buffers[0]
    assert buffer.ndim == 1 and buffer.dtype == np.float32
    for key, value in before.items():
        name, _, k = key.partition(".")
        view = layers[name].params[k]
        assert view is flat.params[key] and view.base is buffer and view.flags.c_contiguous
        np.testing.assert_array_equal(to_numpy(view), value)
        _, offset, _ = flat.layout[key]
        assert offset % ALIGN == 0
    assert flat.num_params() == sum(v.size for v in before.values())
    # padding between tensors is zero, so whole-buffer sums equal sums over the tensors
    assert float(to_numpy(buffer).sum()) == pytest.approx(sum(float(v.sum()) for v in before.values()), rel=1e-5)
    assert flat.grads.buffers[0].shape == buffer.shape and not to_numpy(flat.grads.buffers[0]).any()


def test_one_buffer_per_dtype_and_a_key_subset():
    rng = np.random.default_rng(0)
    a, b = Linear(3, 2, rng=rng, dtype=np.float32), Linear(2, 2, rng=rng, dtype=np.float64)
    flat = FlatParams({"a": a, "b": b})
    assert [buf.dtype for buf in flat.params.buffers] == [np.float32, np.float64]
    assert b.params["W"].base is flat.params.buffers[1]
    head = Linear(2, 2, rng=rng)
    W_before = head.params["W"]
    part = FlatParams({"": head}, keys=["b"])
    assert list(part.params) == ["b"] and head.params["W"] is W_before and head.params["b"] is part.params["b"]
    with pytest.raises(ValueError, match=r"keys \['c'\] are not parameters"):
        FlatParams({"": head}, keys=["c"])


def _big_layers(dtype=np.float32, seed=0):
    """More parameters than one optimiser chunk (CHUNK_BYTES), in float32 and float64."""
    rng = np.random.default_rng(seed)
    return {"a": Linear(96, 512, rng=rng, dtype=dtype), "b": Linear(512, 33, rng=rng, dtype=dtype),
            "c": Linear(3, 2, rng=rng, dtype=np.float64)}


def test_flattening_the_same_params_again_shares_the_buffer_and_an_overlap_detaches_the_old_one():
    """A second optimiser on the same net updates the arrays the layers read (as two per-tensor ones would);
    after an overlapping set is flattened, the old optimiser refuses to step instead of updating dead arrays."""
    rng = np.random.default_rng(0)
    net = Sequential([Linear(3, 4, rng=rng), ReLU(), Linear(4, 2, rng=rng)])
    first = FlatParams({"": net})
    second = FlatParams({"": net})
    assert second.params.buffers[0] is first.params.buffers[0] and second.grads.buffers[0] is not first.grads.buffers[0]
    assert all(second.params[k] is first.params[k] is net.params[k] for k in net.params)
    FlatSGD(second, lr=1.0).step({k: np.ones_like(v) for k, v in net.params.items()})
    np.testing.assert_array_equal(first.params["0.b"], -1.0)  # the first one sees the update
    del second  # the buffer stays recognised while the first owner lives
    assert FlatParams({"": net}).params.buffers[0] is first.params.buffers[0]
    old_opt = FlatAdam(first, lr=1e-3)
    before = net.params["2.W"].copy()
    bigger = FlatParams({"net": net, "extra": Linear(2, 2, rng=rng)})  # overlaps: the params move again
    np.testing.assert_array_equal(bigger.params["net.2.W"], before)
    assert net.params["2.W"] is bigger.params["net.2.W"]
    with pytest.raises(RuntimeError, match="was moved into another FlatParams"):
        old_opt.step()
    FlatAdam(bigger, lr=1e-3).step()  # the newest one works


@pytest.mark.parametrize("make_layers", [_layers, _big_layers], ids=["small", "several-chunks"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["adam", "sgd", "sgd-momentum"])
def test_flat_optimisers_are_bit_identical_to_the_reference(dtype, kind, make_layers):
    ref_layers, flat_layers = make_layers(dtype), make_layers(dtype)
    ref_params = _params(ref_layers)
    flat = FlatParams(flat_layers)
    if kind == "adam":
        ref, fused = Adam(ref_params, lr=3e-3), FlatAdam(flat, lr=3e-3)
    else:
        mu = 0.9 if kind == "sgd-momentum" else 0.0
        ref, fused = SGD(ref_params, lr=0.05, momentum=mu), FlatSGD(flat, lr=0.05, momentum=mu)
    rng = np.random.default_rng(1)
    if make_layers is _big_layers:
        assert max(b.nbytes for b in flat.params.buffers) > 2 * CHUNK_BYTES
    for step in range(STEPS):
        grads = _grads(ref_params, rng, scale=10.0 ** rng.uniform(-4, 1))
        if step == STEPS // 2:
            ref.lr = fused.lr = 1e-3  # a schedule changes lr between steps
        ref.step(grads)
        if step % 2:
            fused.step(grads)  # copied into flat.grads
        else:
            flat.gather(grads)
            fused.step()  # already in flat.grads
    for k, p in ref_params.items():
        np.testing.assert_array_equal(flat.params[k], p, err_msg=k)
    slots = ("m", "v") if kind == "adam" else (("velocity",) if kind == "sgd-momentum" else ())
    for slot in slots:
        for k, v in getattr(ref, slot).items():
            np.testing.assert_array_equal(getattr(fused, slot)[k], v, err_msg=f"{slot}.{k}")
    if kind == "adam":
        assert fused.t == ref.t == STEPS


def test_flat_optimisers_are_the_reference_types_with_state_by_name():
    """Checkpoint code (RecurrentTrainer.state_dict, minidni.distributed.state) reads opt.m/v/velocity by key."""
    flat = FlatParams(_layers())
    adam, sgd = FlatAdam(flat, lr=1e-3), FlatSGD(flat, lr=0.1, momentum=0.5)
    assert isinstance(adam, Adam) and isinstance(sgd, SGD)
    assert list(adam.m) == list(adam.v) == list(sgd.velocity) == list(flat.params)
    assert adam.m["lstm.Wx"].base is adam.m.buffers[0]
    with pytest.raises(ValueError, match=r"missing \['head.b'\]"):
        adam.step({k: g for k, g in flat.grads.items() if k != "head.b"})
    assert adam.t == 0


def test_load_state_dict_writes_into_the_flat_buffer():
    layers, other = _layers(seed=0), _layers(seed=1)
    flat = FlatParams(layers)
    layers["net"].load_state_dict(other["net"].state_dict())
    layers["lstm"].load_state_dict(other["lstm"].state_dict())
    assert layers["lstm"].params["Wx"] is flat.params["lstm.Wx"]
    np.testing.assert_array_equal(flat.params["net.3.W"], other["net"].params["3.W"])
    np.testing.assert_array_equal(flat.params["lstm.Wh"], other["lstm"].params["Wh"])


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-6), (np.float64, 1e-14)])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_grads_equals_clip_by_global_norm_to_rounding(dtype, rtol, max_norm):
    """The norm is summed over whole buffers, not tensor by tensor: equal to float rounding (stated tolerance)."""
    flat = FlatParams(_layers(dtype))
    grads = _grads(flat.params, np.random.default_rng(2))
    ref, ref_norm = clip_by_global_norm(grads, max_norm)
    flat.gather(grads)
    norm = flat.clip_grads(max_norm)
    assert norm.shape == () and norm.dtype == dtype
    np.testing.assert_allclose(norm, ref_norm, rtol=rtol)
    for k, g in ref.items():
        np.testing.assert_allclose(flat.grads[k], g, rtol=rtol, atol=0, err_msg=k)
        assert flat.grads[k].dtype == dtype
    if max_norm > 1e3:  # nothing to clip: the gradients are untouched
        for k, g in grads.items():
            np.testing.assert_array_equal(flat.grads[k], g)
    with pytest.raises(ValueError, match="max_norm must be a finite number > 0"):
        flat.clip_grads(0.0)


@pytest.mark.parametrize("make", [lambda f: FlatAdam(f, lr=1e-3), lambda f: FlatSGD(f, lr=0.1, momentum=0.9)])
def test_a_step_and_a_clip_allocate_no_buffer_sized_temporaries(make):
    """NumPy reports its array allocations to tracemalloc: a fused step makes none the size of the buffer."""
    rng = np.random.default_rng(0)
    flat = FlatParams({"a": Linear(256, 512, rng=rng), "b": Linear(512, 256, rng=rng)})
    opt = make(flat)
    flat.gather(_grads(flat.params, rng))
    opt.step()
    buffer_bytes = flat.params.buffers[0].nbytes
    tracemalloc.start()
    try:
        flat.clip_grads(1.0)
        opt.step()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < buffer_bytes / 100, f"peak {peak} bytes during a step over a {buffer_bytes}-byte buffer"
    reference = Adam(_params({"a": Linear(256, 512, rng=rng)}), lr=1e-3)
    grads = _grads(reference.params, rng)
    tracemalloc.start()
    try:
        reference.step(grads)
        _, ref_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ref_peak > reference.params["a.W"].nbytes / 2  # the check sees the reference's temporaries


# -- workspaces: no per-window allocation ----------------------------------------------------------
def test_workspace_reuses_an_array_only_when_shape_and_dtype_match():
    ws = Workspace()
    a = ws.array(np, "a", (2, 3), np.float32)
    assert ws.array(np, "a", (2, 3), np.float32) is a
    assert ws.array(np, "a", (3, 2), np.float32) is not a
    b = ws.array(np, "a", (3, 2), np.float64)
    assert b.dtype == np.float64 and ws.array(np, "a", (3, 2), np.float64) is b and len(ws) == 1


@pytest.mark.parametrize("with_keep", [False, True])
def test_lstm_with_a_workspace_is_bit_identical_and_allocates_nothing_the_second_time(with_keep):
    rng = np.random.default_rng(3)
    T, N, D, H = 4, 64, 5, 128  # big enough that NumPy's fixed-size ufunc buffers (3 x 32 KiB) do not count
    Wx, Wh = (rng.standard_normal(s).astype(np.float32) * 0.3 for s in ((D, 4 * H), (H, 4 * H)))
    b = rng.standard_normal(4 * H).astype(np.float32)
    ws = Workspace()
    for call in range(3):
        x = rng.standard_normal((T, N, D)).astype(np.float32)
        h0, c0 = (rng.standard_normal((N, H)).astype(np.float32) for _ in range(2))
        dhs, dcT = rng.standard_normal((T, N, H)).astype(np.float32), rng.standard_normal((N, H)).astype(np.float32)
        keep = (rng.random((T, N)) > 0.3).astype(np.float32) if with_keep else None
        hs, cT, cache = lstm_forward(x, h0, c0, Wx, Wh, b, keep=keep)
        ref = (hs.copy(), cT.copy(), *lstm_backward(dhs, dcT, cache))
        out = tuple(np.empty_like(w) for w in (Wx, Wh, b))
        if call == 2:
            tracemalloc.start()
        hs, cT, cache = lstm_forward(x, h0, c0, Wx, Wh, b, keep=keep, workspace=ws)
        got = (hs, cT, *lstm_backward(dhs, dcT, cache, out=out))
        if call == 2:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            assert peak < ws.array(np, "ifgo", (T, N, 4 * H), np.float32).nbytes / 2  # no array-sized temporary
        for r, g in zip(ref, got):
            np.testing.assert_array_equal(g, r)
        assert got[-3] is out[0] and got[-1] is out[2]
    assert lstm_backward(dhs, dcT, cache, input_grad=False)[0] is None


@pytest.mark.parametrize("mode", ["bptt", "dni", "dni-aux"])
def test_a_steady_state_training_window_allocates_little(mode):
    """After two windows (one per workspace) a window allocates less than three gate arrays' worth
    (the trainer before workspaces: about six); what remains is the head, the loss, the SG prediction and Python objects."""
    from minidni.dni.recurrent import RecurrentTrainer, copy_loss
    from minidni.tasks import CopyTaskStream, Curriculum
    from minidni.tasks.copy import IN_CHANNELS, OUT_CHANNELS

    T, B, H = 3, 64, 64
    tr = RecurrentTrainer(IN_CHANNELS, OUT_CHANNELS, H, mode=mode, rng=np.random.default_rng(0))
    stream = CopyTaskStream(Curriculum("copy", start_length=2, max_length=2), B, rng=np.random.default_rng(1))
    windows = [stream.next_window(T) for _ in range(4)]
    for i, w in enumerate(windows):
        if i == 3:
            tracemalloc.start()
        tr.train_window(w.x, lambda logits: copy_loss(logits, w.target, w.mask), episode_end=w.episode_end)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    gate_bytes = T * B * 4 * H * 4
    assert peak < 3 * gate_bytes, f"{peak} bytes allocated in a window (a gate array is {gate_bytes})"
    assert tr.collect_diagnostics()["windows"] == 4


# -- fused CuPy kernels (minidni.kernels) against the NumPy reference ------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not backend.cupy_available(), reason="fused CuPy kernels: CuPy is not installed or no NVIDIA GPU is visible")
@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-4), (np.float64, 1e-11)])
@pytest.mark.parametrize("with_keep", [False, True])
def test_fused_cupy_lstm_kernels_match_the_numpy_path(dtype, rtol, with_keep):
    from minidni import kernels

    cp = backend.set_backend("cupy")
    assert kernels.available(cp)
    rng = np.random.default_rng(4)
    T, N, D, H = 5, 16, 7, 32
    host = {"x": rng.standard_normal((T, N, D)), "h0": rng.standard_normal((N, H)),
            "c0": rng.standard_normal((N, H)), "Wx": rng.standard_normal((D, 4 * H)) * 0.4,
            "Wh": rng.standard_normal((H, 4 * H)) * 0.3, "b": rng.standard_normal(4 * H),
            "dhs": rng.standard_normal((T, N, H)), "dcT": rng.standard_normal((N, H))}
    host = {k: v.astype(dtype) for k, v in host.items()}
    keep = (rng.random((T, N)) > 0.3).astype(dtype) if with_keep else None
    results = []
    for xp in (np, cp):
        a = {k: backend.to_device(v, xp) for k, v in host.items()}
        k = None if keep is None else backend.to_device(keep, xp)
        hs, cT, cache = lstm_forward(a["x"], a["h0"], a["c0"], a["Wx"], a["Wh"], a["b"], keep=k, workspace=Workspace())
        forward = [to_numpy(hs).copy(), to_numpy(cT).copy(), to_numpy(cache.ifgo).copy()]
        results.append(forward + [to_numpy(g) for g in lstm_backward(a["dhs"], a["dcT"], cache)])
    names = ["hs", "cT", "gates", "dx", "dh0", "dc0", "dWx", "dWh", "db"]
    for name, ref, got in zip(names, *results):
        np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol, err_msg=name)
