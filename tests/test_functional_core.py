"""Linear, activations and losses: gradients vs finite differences, values vs references, stability."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minidni import functional as F
from minidni.gradcheck import adjoint_check, check_pair, elementwise_check

dims = st.integers(1, 6)
seeds = st.integers(0, 2**32 - 1)
shapes = st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple)
ACTIVATIONS = [(F.relu_forward, F.relu_backward), (F.tanh_forward, F.tanh_backward),
               (F.sigmoid_forward, F.sigmoid_backward)]


# ---- gradients (float64) -------------------------------------------------------------------

@given(n=dims, d=dims, m=dims, seed=seeds)
def test_linear_gradients(n, d, m, seed):
    rng = np.random.default_rng(seed)
    inputs = [rng.standard_normal((n, d)), rng.standard_normal((d, m)), rng.standard_normal(m)]
    check_pair(F.linear_forward, F.linear_backward, inputs, names=["x", "W", "b"], seed=seed)
    check_pair(F.linear_forward, F.linear_backward, inputs, names=["x", "W", "b"], seed=seed, elementwise=True)


@given(shape=shapes, seed=seeds, which=st.integers(0, 2), scale=st.sampled_from([0.1, 1.0, 5.0]))
def test_activation_gradients(shape, seed, which, scale):
    x = np.random.default_rng(seed).standard_normal(shape) * scale
    forward, backward = ACTIVATIONS[which]
    check_pair(forward, backward, [x], seed=seed)
    check_pair(forward, backward, [x], seed=seed, elementwise=True)


@given(n=dims, k=st.integers(2, 6), seed=seeds, scale=st.sampled_from([0.1, 1.0, 10.0]))
def test_softmax_cross_entropy_gradient(n, k, seed, scale):
    rng = np.random.default_rng(seed)
    logits, labels = rng.standard_normal((n, k)) * scale, rng.integers(0, k, n)
    loss, dlogits = F.softmax_cross_entropy(logits, labels)
    f = lambda z: F.softmax_cross_entropy(z, labels)[0]  # noqa: E731
    elementwise_check(f, [logits], [dlogits], None)
    adjoint_check(f, [logits], [dlogits], None, seed=seed)


@given(shape=shapes, seed=seeds, scale=st.sampled_from([0.1, 1.0, 10.0]))
def test_sigmoid_cross_entropy_gradient(shape, seed, scale):
    rng = np.random.default_rng(seed)
    logits, targets = rng.standard_normal(shape) * scale, rng.random(shape)
    loss, dlogits = F.sigmoid_cross_entropy(logits, targets)
    f = lambda z: F.sigmoid_cross_entropy(z, targets)[0]  # noqa: E731
    elementwise_check(f, [logits], [dlogits], None)


@given(shape=shapes, seed=seeds)
def test_mse_gradient(shape, seed):
    rng = np.random.default_rng(seed)
    pred, target = rng.standard_normal(shape), rng.standard_normal(shape)
    loss, dpred = F.mse(pred, target)
    elementwise_check(lambda p: F.mse(p, target)[0], [pred], [dpred], None)


# ---- values vs straightforward references ----------------------------------------------------

@given(n=dims, d=dims, m=dims, seed=seeds)
def test_linear_value(n, d, m, seed):
    rng = np.random.default_rng(seed)
    x, W, b = rng.standard_normal((n, d)), rng.standard_normal((d, m)), rng.standard_normal(m)
    y, _ = F.linear_forward(x, W, b)
    reference = [[sum(x[i, j] * W[j, k] for j in range(d)) + b[k] for k in range(m)] for i in range(n)]
    np.testing.assert_allclose(y, reference, rtol=1e-12, atol=1e-12)


def test_activation_values():
    x = np.linspace(-6.0, 6.0, 49)
    np.testing.assert_array_equal(F.relu_forward(x)[0], np.where(x > 0, x, 0.0))
    np.testing.assert_allclose(F.tanh_forward(x)[0], np.tanh(x), rtol=1e-15)
    np.testing.assert_allclose(F.sigmoid_forward(x)[0], 1.0 / (1.0 + np.exp(-x)), rtol=1e-14)


@given(n=dims, k=st.integers(2, 6), seed=seeds)
def test_loss_values_match_references(n, k, seed):
    rng = np.random.default_rng(seed)
    logits, labels = rng.standard_normal((n, k)) * 3, rng.integers(0, k, n)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    reference = -np.mean(np.log(probs[np.arange(n), labels]))
    np.testing.assert_allclose(F.softmax_cross_entropy(logits, labels)[0], reference, rtol=1e-12, atol=1e-12)

    targets = rng.random((n, k))
    s = 1.0 / (1.0 + np.exp(-logits))
    reference = np.sum(-targets * np.log(s) - (1 - targets) * np.log(1 - s)) / n
    np.testing.assert_allclose(F.sigmoid_cross_entropy(logits, targets)[0], reference, rtol=1e-12, atol=1e-12)

    np.testing.assert_allclose(F.mse(logits, targets)[0], np.sum((logits - targets) ** 2) / (2 * n), rtol=1e-12, atol=1e-12)


def test_losses_return_0d_arrays():
    logits = np.zeros((2, 3))
    for loss, _ in (F.softmax_cross_entropy(logits, np.array([0, 2])),
                    F.sigmoid_cross_entropy(logits, np.ones((2, 3))), F.mse(logits, np.ones((2, 3)))):
        assert isinstance(loss, np.ndarray) and loss.shape == ()


# ---- stability at +-1e4 (filterwarnings=error turns overflow warnings into failures) ------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_losses_and_sigmoid_are_stable_at_huge_logits(dtype):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]], dtype=dtype)
    loss, dlogits = F.softmax_cross_entropy(logits, np.array([1, 2]))
    # row 0: -log softmax = 2e4 exactly up to rounding; row 1: uniform, log 3
    np.testing.assert_allclose(loss, (2e4 + np.log(3)) / 2, rtol=1e-6)
    np.testing.assert_allclose(dlogits, [[0.5, -0.5, 0.0], [1 / 6, 1 / 6, -1 / 3]], atol=1e-6)

    targets = np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 0.5]], dtype=dtype)
    loss, dlogits = F.sigmoid_cross_entropy(logits, targets)
    np.testing.assert_allclose(loss, (2e4 + np.log(2) + 1e4 + 5e3) / 2, rtol=1e-6)
    np.testing.assert_allclose(dlogits, [[0.5, -0.5, -0.25], [-0.5, 0.0, -0.25]], atol=1e-6)

    y, _ = F.sigmoid_forward(logits)
    np.testing.assert_array_equal(y, [[1.0, 0.0, 0.5], [0.0, 0.0, 0.0]])
    for a in (loss, dlogits, y):
        assert np.all(np.isfinite(a)) and a.dtype == dtype


# ---- dtypes and errors -------------------------------------------------------------------------

def test_float32_in_float32_out():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    W, b = rng.standard_normal((4, 2)).astype(np.float32), np.zeros(2, np.float32)
    y, cache = F.linear_forward(x, W, b)
    assert y.dtype == np.float32 and all(g.dtype == np.float32 for g in F.linear_backward(y, cache))
    for forward, backward in ACTIVATIONS:
        y, cache = forward(x)
        assert y.dtype == np.float32 and backward(y, cache).dtype == np.float32
    float64_targets = rng.random((3, 4))  # float targets are cast to the logits' dtype
    for loss, grad in (F.softmax_cross_entropy(x, np.array([0, 1, 3])),
                       F.sigmoid_cross_entropy(x, float64_targets), F.mse(x, float64_targets)):
        assert loss.dtype == np.float32 and grad.dtype == np.float32


def test_bad_loss_inputs_are_clear_errors():
    logits = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        F.softmax_cross_entropy(logits, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="integer class indices in \\[0, 3\\)"):
        F.softmax_cross_entropy(logits, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"logits must have shape \(N, K\)"):
        F.softmax_cross_entropy(np.zeros(3), np.array([0]))
    with pytest.raises(ValueError, match=r"targets has shape \(2, 2\)"):
        F.sigmoid_cross_entropy(logits, np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"target has shape \(3,\)"):
        F.mse(logits, np.zeros(3))


@pytest.mark.parametrize("module", ["linear", "activations", "losses", "batchnorm"])
def test_ops_take_their_array_module_from_inputs_and_never_sync(module):
    import ast  # noqa: PLC0415
    import importlib  # noqa: PLC0415
    import inspect  # noqa: PLC0415

    source = inspect.getsource(importlib.import_module(f"minidni.functional.{module}"))
    assert "import numpy" not in source and "get_xp" in source
    calls = [node.func for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call)]
    names = {f.id for f in calls if isinstance(f, ast.Name)} | {f.attr for f in calls if isinstance(f, ast.Attribute)}
    assert not names & {"float", "item", "tolist", "asnumpy", "get"}
