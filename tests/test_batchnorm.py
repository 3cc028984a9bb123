"""Batch normalisation: gradients in train and inference mode, statistics, running-stat updates."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minidni.backend import to_numpy
from minidni.functional.batchnorm import batchnorm_backward, batchnorm_forward
from minidni.gradcheck import check_pair
from minidni.layers import BatchNorm

seeds = st.integers(0, 2**32 - 1)
# (N, D) or (N, C, H, W) with at least 3 values per feature: with only 2, two nearly equal values
# make the normalisation so curved that central differences at eps = 1e-6 lose ~6 digits
shapes = st.one_of(
    st.tuples(st.integers(3, 6), st.integers(1, 5)),
    st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(3, 4)),
)


def _inputs(shape, seed):
    rng = np.random.default_rng(seed)
    f = shape[1]
    x = rng.standard_normal(shape) * rng.uniform(0.5, 3.0) + rng.uniform(-2.0, 2.0)
    gamma, beta = rng.standard_normal(f), rng.standard_normal(f)
    running_mean, running_var = rng.standard_normal(f), rng.uniform(0.5, 2.0, f)
    return x, gamma, beta, running_mean, running_var


@given(shape=shapes, seed=seeds, train=st.booleans())
def test_gradients(shape, seed, train):
    x, gamma, beta, rm, rv = _inputs(shape, seed)
    forward = lambda x, g, b: batchnorm_forward(x, g, b, rm, rv, train=train)  # noqa: E731
    check_pair(forward, batchnorm_backward, [x, gamma, beta], names=["x", "gamma", "beta"], seed=seed)


@pytest.mark.parametrize("shape", [(3, 2), (2, 2, 2, 2)])
@pytest.mark.parametrize("train", [True, False])
def test_gradients_elementwise(shape, train):
    x, gamma, beta, rm, rv = _inputs(shape, 7)
    forward = lambda x, g, b: batchnorm_forward(x, g, b, rm, rv, train=train)  # noqa: E731
    check_pair(forward, batchnorm_backward, [x, gamma, beta], names=["x", "gamma", "beta"], elementwise=True)


@given(shape=shapes, seed=seeds)
def test_train_mode_normalises_each_feature(shape, seed):
    x, _, _, rm, rv = _inputs(shape, seed)
    f = shape[1]
    y, _ = batchnorm_forward(x, np.ones(f), np.zeros(f), rm, rv, train=True, eps=1e-5)
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    np.testing.assert_allclose(y.mean(axis=axes), 0.0, atol=1e-10)
    var = x.var(axis=axes)
    np.testing.assert_allclose(y.var(axis=axes), var / (var + 1e-5), rtol=1e-10)  # 1 up to eps


@given(shape=shapes, seed=seeds)
def test_inference_mode_uses_running_stats(shape, seed):
    x, gamma, beta, rm, rv = _inputs(shape, seed)
    y, cache = batchnorm_forward(x, gamma, beta, rm, rv, train=False, eps=1e-5)
    view = (1, -1) if x.ndim == 2 else (1, -1, 1, 1)
    expected = gamma.reshape(view) * (x - rm.reshape(view)) / np.sqrt(rv.reshape(view) + 1e-5) + beta.reshape(view)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(cache.running_mean, rm)
    np.testing.assert_array_equal(cache.running_var, rv)


@pytest.mark.parametrize("shape", [(8, 3), (4, 3, 2, 5)])
def test_running_stat_update_returns_new_arrays(shape):
    x, gamma, beta, rm, rv = _inputs(shape, 1)
    before = rm.copy(), rv.copy()
    _, cache = batchnorm_forward(x, gamma, beta, rm, rv, train=True, momentum=0.25)
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    m = x.size // shape[1]
    np.testing.assert_allclose(cache.running_mean, 0.75 * rm + 0.25 * x.mean(axis=axes), rtol=1e-12)
    np.testing.assert_allclose(cache.running_var, 0.75 * rv + 0.25 * x.var(axis=axes, ddof=1), rtol=1e-12)
    assert m > 1
    np.testing.assert_array_equal(rm, before[0])  # the inputs are never modified
    np.testing.assert_array_equal(rv, before[1])


def test_layer_updates_buffers_in_place_only_in_train_mode(xp):
    layer = BatchNorm(3, momentum=0.5)
    running_mean = layer.buffers["running_mean"]
    x = xp.asarray(np.random.default_rng(2).standard_normal((16, 3, 2, 2)) + 4.0, dtype=xp.float32)
    layer.forward(x, train=False)
    np.testing.assert_array_equal(to_numpy(running_mean), 0.0)
    layer.forward(x, train=True)
    assert layer.buffers["running_mean"] is running_mean
    np.testing.assert_allclose(to_numpy(running_mean), 0.5 * to_numpy(x).mean(axis=(0, 2, 3)), rtol=1e-5)
    y_eval, _ = layer.forward(x, train=False)
    assert y_eval.dtype == np.float32
    np.testing.assert_allclose(to_numpy(layer.buffers["running_mean"]), to_numpy(running_mean))


def test_float32_in_float32_out():
    x, gamma, beta, rm, rv = (a.astype(np.float32) for a in _inputs((4, 3, 2, 2), 3))
    for train in (True, False):
        y, cache = batchnorm_forward(x, gamma, beta, rm, rv, train=train)
        grads = batchnorm_backward(y, cache)
        assert all(a.dtype == np.float32 for a in (y, cache.running_mean, cache.running_var, *grads))


def test_bad_inputs_are_clear_errors():
    x, gamma, beta, rm, rv = _inputs((4, 3), 4)
    with pytest.raises(ValueError, match=r"x of shape \(N, D\) or \(N, C, H, W\)"):
        batchnorm_forward(x[0], gamma, beta, rm, rv)
    with pytest.raises(ValueError, match=r"gamma must have shape \(3,\)"):
        batchnorm_forward(x, gamma[:2], beta, rm, rv)
    with pytest.raises(ValueError, match="more than 1 value per feature"):
        batchnorm_forward(x[:1], gamma, beta, rm, rv, train=True)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\]"):
        batchnorm_forward(x, gamma, beta, rm, rv, momentum=1.5)
    batchnorm_forward(x[:1], gamma, beta, rm, rv, train=False)  # one example is fine at inference
