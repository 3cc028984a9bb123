import numpy as np
import pytest

from minidni import backend


def test_unknown_backend_is_a_one_line_error():
    with pytest.raises(backend.BackendError, match="unknown backend 'tpu'; choose one of numpy, cupy"):
        backend.set_backend("tpu")


@pytest.mark.skipif(backend.cupy_available(), reason="CuPy with a GPU is available here")
def test_cupy_without_gpu_says_how_to_install():
    with pytest.raises(backend.BackendError) as info:
        backend.set_backend("cupy")
    message = str(info.value)
    assert "\n" not in message and 'pip install -e ".[gpu]"' in message


def test_env_var_selects_backend(monkeypatch):
    monkeypatch.setattr(backend, "_selected", None)
    monkeypatch.setenv(backend.ENV_VAR, "numpy")
    assert backend.get_backend() is np
    monkeypatch.setattr(backend, "_selected", None)
    monkeypatch.setenv(backend.ENV_VAR, "jax")
    with pytest.raises(backend.BackendError, match="'jax'"):
        backend.get_backend()


def test_get_xp_ignores_none_and_scalars():
    assert backend.get_xp(np.zeros(2), None, 3.0) is np
    assert backend.get_xp() is backend.get_backend()


def test_to_numpy_and_to_device_roundtrip_nested():
    tree = {"a": [np.arange(3.0), None], "b": np.ones((2, 2), np.float32)}
    back = backend.to_numpy(backend.to_device(tree))
    np.testing.assert_array_equal(back["a"][0], np.arange(3.0))
    assert back["b"].dtype == np.float32 and back["a"][1] is None


class _FakeCupyArray:
    """Stands in for a cupy.ndarray: get_xp decides by the defining module."""
    __module__ = "cupy._core.core"


def test_mixing_numpy_and_cupy_arrays_is_an_error():
    with pytest.raises(backend.BackendError, match="mixed"):
        backend.get_xp(np.zeros(2), _FakeCupyArray())


def test_cupy_arrays_move_to_host_and_back(xp):
    a = xp.arange(6, dtype=xp.float32).reshape(2, 3)
    host = backend.to_numpy(a)
    assert isinstance(host, np.ndarray) and host.dtype == np.float32
    assert backend.get_xp(backend.to_device(host, xp)) is xp
