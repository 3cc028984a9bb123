"""conv2d, max-pool and average-pool: loop references, gradient checks, golden conventions, dtypes, backends, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minidni.backend import to_device, to_numpy
from minidni.functional import (
    avgpool2d_backward,
    avgpool2d_forward,
    conv2d_backward,
    conv2d_forward,
    maxpool2d_backward,
    maxpool2d_forward,
)
from minidni.gradcheck import GradientCheckError, check_pair

# ---------------------------------------------------------------------------------------------
# Slow, obviously correct references: one output element at a time.


def conv_loops(x, W, b, stride, pad):
    n, c, h, w = x.shape
    f, _, kh, kw = W.shape
    xpad = np.zeros((n, c, h + 2 * pad, w + 2 * pad))
    xpad[:, :, pad:pad + h, pad:pad + w] = x
    oh, ow = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
    y = np.zeros((n, f, oh, ow))
    for i in range(n):
        for k in range(f):
            for oy in range(oh):
                for ox in range(ow):
                    window = xpad[i, :, oy * stride:oy * stride + kh, ox * stride:ox * stride + kw]
                    y[i, k, oy, ox] = np.sum(window * W[k]) + b[k]
    return y


def pool_loops(x, size, stride, pad, reduce):
    """``reduce(list of real cell values, number of padding cells)`` for every window."""
    n, c, h, w = x.shape
    oh, ow = (h + 2 * pad - size) // stride + 1, (w + 2 * pad - size) // stride + 1
    y = np.zeros((n, c, oh, ow))
    for i in range(n):
        for k in range(c):
            for oy in range(oh):
                for ox in range(ow):
                    cells = [x[i, k, r, s]
                             for r in range(oy * stride - pad, oy * stride - pad + size)
                             for s in range(ox * stride - pad, ox * stride - pad + size)
                             if 0 <= r < h and 0 <= s < w]
                    y[i, k, oy, ox] = reduce(cells, size * size - len(cells))
    return y


def maxpool_loops(x, size, stride, pad):
    return pool_loops(x, size, stride, pad, lambda cells, _: max(cells))


def avgpool_loops(x, size, stride, pad, count_include_pad=False):
    if count_include_pad:
        return pool_loops(x, size, stride, pad, lambda cells, n_pad: sum(cells) / (len(cells) + n_pad))
    return pool_loops(x, size, stride, pad, lambda cells, _: sum(cells) / len(cells))


def distinct_values(rng, shape):
    """Distinct values spaced 1/size apart in [0, 1): no ties for max-pool, so finite differences see no kink."""
    size = int(np.prod(shape))
    return rng.permutation(size).reshape(shape) / size


# ---------------------------------------------------------------------------------------------
# (a) forward against the loops, on fixed shapes (several strides, paddings, kernels, non-square).

CONV_CASES = [  # (N, C, H, W), (F, KH, KW), stride, pad
    ((2, 3, 5, 5), (4, 3, 3), 1, 0),
    ((2, 3, 5, 5), (4, 3, 3), 1, 1),
    ((1, 2, 7, 6), (3, 3, 2), 2, 1),
    ((2, 1, 6, 9), (2, 1, 4), 3, 2),
    ((1, 4, 8, 8), (5, 5, 5), 1, 2),
    ((3, 2, 4, 5), (2, 1, 1), 2, 0),
]


@pytest.mark.parametrize("xshape, wshape, stride, pad", CONV_CASES)
def test_conv_forward_matches_loops(xshape, wshape, stride, pad):
    rng = np.random.default_rng(1)
    f, kh, kw = wshape
    x = rng.standard_normal(xshape)
    W = rng.standard_normal((f, xshape[1], kh, kw))
    b = rng.standard_normal(f)
    y, _ = conv2d_forward(x, W, b, stride=stride, pad=pad)
    np.testing.assert_allclose(y, conv_loops(x, W, b, stride, pad), rtol=1e-12, atol=1e-12)


POOL_CASES = [(2, 2, 0), (3, 2, 0), (3, 2, 1), (3, 1, 1), (2, 3, 1), (4, 2, 3)]  # size, stride, pad


@pytest.mark.parametrize("size, stride, pad", POOL_CASES)
def test_pool_forward_matches_loops(size, stride, pad):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 7, 6))
    np.testing.assert_allclose(maxpool2d_forward(x, size=size, stride=stride, pad=pad)[0],
                               maxpool_loops(x, size, stride, pad), rtol=0, atol=0)
    for include in (False, True):
        y, _ = avgpool2d_forward(x, size=size, stride=stride, pad=pad, count_include_pad=include)
        np.testing.assert_allclose(y, avgpool_loops(x, size, stride, pad, include), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# (b) properties: Hypothesis draws shapes, hyperparameters and a seed; values from default_rng(seed).


@st.composite
def conv_setups(draw):
    n, c, f = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    stride, pad = draw(st.integers(1, 3)), draw(st.integers(0, 2))
    kh = draw(st.integers(1, min(4, h + 2 * pad)))
    kw = draw(st.integers(1, min(4, w + 2 * pad)))
    return (n, c, h, w), (f, c, kh, kw), stride, pad, draw(st.integers(0, 2**32 - 1))


@st.composite
def pool_setups(draw):
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    size = draw(st.integers(1, 4))
    pad = draw(st.integers(0, size - 1))
    h, w = max(h, size - 2 * pad), max(w, size - 2 * pad)  # the window must fit the padded input
    return (n, c, h, w), size, draw(st.integers(1, 3)), pad, draw(st.integers(0, 2**32 - 1))


@given(conv_setups())
def test_conv_property_forward_and_adjoint(setup):
    xshape, wshape, stride, pad, seed = setup
    rng = np.random.default_rng(seed)
    x, W, b = rng.standard_normal(xshape), rng.standard_normal(wshape), rng.standard_normal(wshape[0])
    y, _ = conv2d_forward(x, W, b, stride=stride, pad=pad)
    np.testing.assert_allclose(y, conv_loops(x, W, b, stride, pad), rtol=1e-10, atol=1e-12)
    check_pair(lambda x, W, b: conv2d_forward(x, W, b, stride=stride, pad=pad), conv2d_backward,
               [x, W, b], names=["x", "W", "b"], seed=seed)


@given(pool_setups())
def test_maxpool_property_forward_and_adjoint(setup):
    xshape, size, stride, pad, seed = setup
    x = distinct_values(np.random.default_rng(seed), xshape)
    y, _ = maxpool2d_forward(x, size=size, stride=stride, pad=pad)
    np.testing.assert_array_equal(y, maxpool_loops(x, size, stride, pad))
    check_pair(lambda x: maxpool2d_forward(x, size=size, stride=stride, pad=pad), maxpool2d_backward, [x], seed=seed)


@given(pool_setups(), st.booleans())
def test_avgpool_property_forward_and_adjoint(setup, include):
    xshape, size, stride, pad, seed = setup
    x = np.random.default_rng(seed).standard_normal(xshape)
    y, _ = avgpool2d_forward(x, size=size, stride=stride, pad=pad, count_include_pad=include)
    np.testing.assert_allclose(y, avgpool_loops(x, size, stride, pad, include), rtol=1e-12, atol=1e-12)
    check_pair(lambda x: avgpool2d_forward(x, size=size, stride=stride, pad=pad, count_include_pad=include),
               avgpool2d_backward, [x], seed=seed)


# Elementwise checks on tiny fixed shapes: stride 2 with padding, and overlapping 3x3/stride-2 pools.


@pytest.mark.parametrize("stride, pad", [(1, 0), (2, 1), (2, 2), (3, 1)])
def test_conv_elementwise_gradients(stride, pad):
    rng = np.random.default_rng(3)
    x, W, b = rng.standard_normal((2, 2, 5, 4)), rng.standard_normal((3, 2, 3, 2)), rng.standard_normal(3)
    check_pair(lambda x, W, b: conv2d_forward(x, W, b, stride=stride, pad=pad), conv2d_backward,
               [x, W, b], names=["x", "W", "b"], elementwise=True)


@pytest.mark.parametrize("size, stride, pad", [(3, 2, 0), (3, 2, 1), (2, 2, 0), (3, 1, 1)])
def test_pool_elementwise_gradients(size, stride, pad):
    rng = np.random.default_rng(4)
    x = distinct_values(rng, (2, 2, 7, 6))
    check_pair(lambda x: maxpool2d_forward(x, size=size, stride=stride, pad=pad), maxpool2d_backward, [x],
               elementwise=True)
    for include in (False, True):
        check_pair(lambda x: avgpool2d_forward(x, size=size, stride=stride, pad=pad, count_include_pad=include),
                   avgpool2d_backward, [x], elementwise=True)


def test_gradcheck_catches_a_flipped_kernel_gradient():
    """The check is not vacuous: a backward that returns dW for a *convolution* (flipped kernel) fails."""
    rng = np.random.default_rng(5)
    x, W, b = rng.standard_normal((2, 2, 5, 5)), rng.standard_normal((2, 2, 3, 3)), rng.standard_normal(2)

    def flipped_backward(dy, cache):
        dx, dW, db = conv2d_backward(dy, cache)
        return dx, dW[:, :, ::-1, ::-1], db

    with pytest.raises(GradientCheckError, match="W"):
        check_pair(lambda x, W, b: conv2d_forward(x, W, b, pad=1), flipped_backward, [x, W, b], names=["x", "W", "b"])


# ---------------------------------------------------------------------------------------------
# (c) golden tests: conventions the gradient checks cannot see.

X33 = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)  # [[1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_conv_is_cross_correlation_not_convolution():
    W = np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)
    y, _ = conv2d_forward(X33, W, np.zeros(1))
    # y[0, 0] = 1*1 + 2*2 + 3*4 + 4*5 = 37 (a flipped kernel, i.e. true convolution, would give 23).
    np.testing.assert_array_equal(y[0, 0], [[37.0, 47.0], [67.0, 77.0]])


def test_conv_pads_both_sides_with_zeros():
    picks_bottom_right = np.array([[0.0, 0.0], [0.0, 1.0]]).reshape(1, 1, 2, 2)
    y, _ = conv2d_forward(X33, picks_bottom_right, np.array([0.5]), pad=1)
    # Output (0, 0)'s window starts at padded cell (-1, -1); its bottom-right cell is x[0, 0].
    np.testing.assert_array_equal(y[0, 0], [[1.5, 2.5, 3.5, 0.5], [4.5, 5.5, 6.5, 0.5],
                                            [7.5, 8.5, 9.5, 0.5], [0.5, 0.5, 0.5, 0.5]])
    centre = np.zeros((1, 1, 3, 3))
    centre[0, 0, 1, 1] = 1.0
    y, _ = conv2d_forward(X33, centre, np.zeros(1), stride=2, pad=1)  # windows centred on x[0::2, 0::2]
    np.testing.assert_array_equal(y[0, 0], [[1.0, 3.0], [7.0, 9.0]])


def test_maxpool_padding_never_wins_and_same_halving():
    x = -np.arange(1.0, 17.0).reshape(1, 1, 4, 4)  # all negative: zero padding would win, -inf does not
    y, _ = maxpool2d_forward(x, size=3, stride=2, pad=1)
    # Window (oy, ox) covers rows 2oy-1..2oy+1 and columns 2ox-1..2ox+1; its top-left real cell is the largest.
    np.testing.assert_array_equal(y[0, 0], [[-1.0, -2.0], [-5.0, -6.0]])
    assert maxpool2d_forward(np.zeros((1, 1, 32, 32)), size=3, stride=2, pad=1)[0].shape == (1, 1, 16, 16)


def test_maxpool_tie_sends_gradient_to_first_maximum(xp):
    x = xp.asarray(np.array([[0.0, 5.0], [5.0, 5.0]]).reshape(1, 1, 2, 2))
    y, cache = maxpool2d_forward(x, size=2, stride=2)
    dx = maxpool2d_backward(xp.asarray(np.array([[[[2.0]]]])), cache)
    np.testing.assert_array_equal(to_numpy(dx)[0, 0], [[0.0, 2.0], [0.0, 0.0]])


def test_overlapping_maxpool_backward_adds_up():
    x = np.zeros((1, 1, 5, 5))
    x[0, 0, 2, 2] = 1.0  # the centre is the maximum of all four overlapping 3x3 windows
    _, cache = maxpool2d_forward(x, size=3, stride=2)
    dx = maxpool2d_backward(np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2), cache)
    assert dx[0, 0, 2, 2] == 10.0 and dx.sum() == 10.0


def test_avgpool_divisor_conventions():
    ones = np.ones((1, 1, 4, 4))
    y, _ = avgpool2d_forward(ones, size=3, stride=2, pad=1)
    np.testing.assert_array_equal(y[0, 0], np.ones((2, 2)))  # only real cells are counted
    y, _ = avgpool2d_forward(ones, size=3, stride=2, pad=1, count_include_pad=True)
    np.testing.assert_allclose(y[0, 0], [[4 / 9, 6 / 9], [6 / 9, 9 / 9]], rtol=1e-15)


# ---------------------------------------------------------------------------------------------
# (d) float32 in -> float32 out, forward and backward.


def test_float32_stays_float32():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    W = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    y, cache = conv2d_forward(x, W, b, stride=2, pad=1)
    assert y.dtype == np.float32
    assert all(g.dtype == np.float32 for g in conv2d_backward(np.ones_like(y), cache))
    for forward, backward in [(maxpool2d_forward, maxpool2d_backward), (avgpool2d_forward, avgpool2d_backward)]:
        y, cache = forward(x, size=3, stride=2, pad=1)
        assert y.dtype == np.float32
        assert backward(np.ones_like(y), cache).dtype == np.float32
    y, cache = avgpool2d_forward(x, size=3, stride=2, pad=1, count_include_pad=True)
    assert y.dtype == np.float32 and avgpool2d_backward(np.ones_like(y), cache).dtype == np.float32


# ---------------------------------------------------------------------------------------------
# (e) backend parity: every backend gives NumPy's values (float32: forward 1e-5, backward 1e-4).


def _parity(xp, forward, backward, inputs):
    out_np, cache_np = forward(*inputs)
    dy = np.random.default_rng(7).standard_normal(out_np.shape).astype(np.float32)
    grads_np = backward(dy, cache_np)
    out, cache = forward(*to_device(inputs, xp))
    grads = backward(to_device(dy, xp), cache)
    assert type(out) is xp.ndarray and out.dtype == np.float32
    np.testing.assert_allclose(to_numpy(out), out_np, rtol=1e-5, atol=1e-5)
    for g, g_np in zip(grads if isinstance(grads, tuple) else (grads,),
                       grads_np if isinstance(grads_np, tuple) else (grads_np,)):
        np.testing.assert_allclose(to_numpy(g), g_np, rtol=1e-4, atol=1e-4)


def test_backend_parity(xp):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3, 2, 9, 8)).astype(np.float32)
    W = rng.standard_normal((4, 2, 3, 5)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    _parity(xp, lambda x, W, b: conv2d_forward(x, W, b, stride=2, pad=1), conv2d_backward, [x, W, b])
    distinct = distinct_values(rng, x.shape).astype(np.float32)
    _parity(xp, lambda x: maxpool2d_forward(x, size=3, stride=2, pad=1), maxpool2d_backward, [distinct])
    _parity(xp, lambda x: avgpool2d_forward(x, size=3, stride=2, pad=1), avgpool2d_backward, [x])


# ---------------------------------------------------------------------------------------------
# (f) bad arguments: a ValueError naming the value and the accepted range.

x4 = np.zeros((2, 3, 5, 5))


@pytest.mark.parametrize("args, kwargs, message", [
    ((x4, np.zeros((4, 2, 3, 3)), np.zeros(4)), {}, r"x has 3 channels .* W expects C = 2"),
    ((x4, np.zeros((4, 3, 8, 3)), np.zeros(4)), {"pad": 1}, r"kernel 8x3 must fit the padded input 7x7"),
    ((x4, np.zeros((4, 3, 3, 3)), np.zeros(4)), {"stride": 0}, r"stride must be an integer >= 1, got 0"),
    ((x4, np.zeros((4, 3, 3, 3)), np.zeros(4)), {"pad": -1}, r"pad must be an integer >= 0, got -1"),
    ((x4, np.zeros((4, 3, 3, 3)), np.zeros(4)), {"stride": 1.5}, r"stride must be an integer >= 1, got 1.5"),
    ((x4, np.zeros((4, 3, 3, 3)), np.zeros(5)), {}, r"b must have shape \(F,\) = \(4,\)"),
    ((x4[0], np.zeros((4, 3, 3, 3)), np.zeros(4)), {}, r"x must have shape \(N, C, H, W\), got shape \(3, 5, 5\)"),
    ((x4.astype(np.float32), np.zeros((4, 3, 3, 3)), np.zeros(4)), {}, r"float32, float64, float64"),
])
def test_conv_bad_arguments(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        conv2d_forward(*args, **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"size": 0, "stride": 1}, r"size must be an integer >= 1, got 0"),
    ({"size": 2, "stride": 0}, r"stride must be an integer >= 1, got 0"),
    ({"size": 3, "stride": 2, "pad": 3}, r"pad must be in 0..size-1 = 0..2 .* got pad 3"),
    ({"size": 6, "stride": 1}, r"window size 6 must fit the padded input 5x5 .* 1 <= size <= 5"),
])
@pytest.mark.parametrize("forward", [maxpool2d_forward, avgpool2d_forward])
def test_pool_bad_arguments(forward, kwargs, message):
    with pytest.raises(ValueError, match=message):
        forward(x4, **kwargs)


def test_backward_rejects_wrong_dy_shape():
    y, cache = conv2d_forward(x4, np.zeros((4, 3, 3, 3)), np.zeros(4))
    with pytest.raises(ValueError, match=r"dy must have the output's shape \(2, 4, 3, 3\)"):
        conv2d_backward(np.zeros((2, 4, 3, 4)), cache)
    _, cache = maxpool2d_forward(x4, size=2, stride=2)
    with pytest.raises(ValueError, match=r"dy must have the output's shape \(2, 3, 2, 2\)"):
        maxpool2d_backward(np.zeros((2, 3, 3, 3)), cache)
