"""Layers: key conventions, gradients through Sequential, returned caches, init, checkpoints, backends."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minidni import backend
from minidni.backend import get_xp, to_device, to_numpy
from minidni.gradcheck import adjoint_check, elementwise_check
from minidni.layers import (AvgPool2d, BatchNorm, Conv2d, Flatten, Layer, Linear, MaxPool2d, ReLU, Sequential,
                            Sigmoid, Tanh)

seeds = st.integers(0, 2**32 - 1)


def mlp(rng, dtype=np.float64):
    return Sequential([Linear(4, 6, rng=rng, dtype=dtype), BatchNorm(6, dtype=dtype), Tanh(),
                       Linear(6, 5, rng=rng, dtype=dtype, init="xavier"), ReLU(), Linear(5, 3, rng=rng, dtype=dtype),
                       Sigmoid()])


def convnet(rng, dtype=np.float64):
    return Sequential([Conv2d(2, 3, 3, pad=1, rng=rng, dtype=dtype), BatchNorm(3, dtype=dtype), ReLU(),
                       MaxPool2d(3, 2, pad=1), Conv2d(3, 2, (2, 1), stride=1, rng=rng, dtype=dtype),
                       AvgPool2d(2, 1), Flatten(), Linear(2 * 1 * 2, 3, rng=rng, dtype=dtype)])


def _randomise_params(net, rng):
    """Random biases and BatchNorm gamma/beta (they start at constants), so every gradient is exercised."""
    for p in net.params.values():
        if p.ndim == 1:
            p[...] = rng.standard_normal(p.shape)


def check_net_gradients(net, x, seed, *, elementwise=False):
    """Gradient-check ``net`` with respect to its input and every parameter (float64)."""
    y, caches = net.forward(x)
    dy = np.random.default_rng(seed).standard_normal(y.shape)
    dx, grads = net.backward(dy, caches)
    keys = list(net.params)
    originals = [net.params[k].copy() for k in keys]

    def f(x, *values):
        for k, v in zip(keys, values):
            net.params[k][...] = v  # in place: the layers own these arrays
        return net.forward(x)[0]

    check = elementwise_check if elementwise else adjoint_check
    try:
        return check(f, [x, *originals], [dx, *(grads[k] for k in keys)], dy, names=["x", *keys])
    finally:
        f(x, *originals)


@given(seed=seeds, n=st.integers(4, 6))
def test_sequential_mlp_gradients(seed, n):
    # n >= 4: with two examples, a feature whose two values nearly coincide makes BatchNorm so
    # curved that central differences at eps = 1e-6 miss by ~1e-6 (a property of the numerics)
    rng = np.random.default_rng(seed)
    net = mlp(rng)
    _randomise_params(net, rng)
    errors = check_net_gradients(net, rng.standard_normal((n, 4)), seed)
    assert set(errors) == {"x", *net.params}


def test_sequential_convnet_gradients():
    rng = np.random.default_rng(0)
    net = convnet(rng)
    _randomise_params(net, rng)
    x = rng.standard_normal((2, 2, 5, 6))
    assert net.forward(x)[0].shape == (2, 3)
    check_net_gradients(net, x, 1)
    check_net_gradients(net, x, 2, elementwise=True)


@pytest.mark.parametrize("make", [mlp, convnet])
def test_param_and_grad_keys_match(make):
    rng = np.random.default_rng(0)
    net = make(rng, np.float32)
    x = rng.standard_normal((3, 4) if make is mlp else (3, 2, 5, 6)).astype(np.float32)
    y, caches = net.forward(x)
    dx, grads = net.backward(np.ones_like(y), caches)
    assert list(grads) == list(net.params) and dx.shape == x.shape
    for k, p in net.params.items():
        assert grads[k].shape == p.shape and grads[k].dtype == p.dtype == np.float32
    for i, layer in enumerate(net.layers):
        for k, p in layer.params.items():
            assert net.params[f"{i}.{k}"] is p  # the container exposes the layers' own arrays


def test_two_minibatches_in_flight_give_the_same_grads_as_one_at_a_time():
    rng = np.random.default_rng(1)
    net = mlp(rng)
    x1, x2 = rng.standard_normal((5, 4)), rng.standard_normal((5, 4))
    dy1, dy2 = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    y1, caches1 = net.forward(x1)
    dx1_alone, grads1_alone = net.backward(dy1, caches1)
    y2, caches2 = net.forward(x2)  # a second minibatch enters before the first one's backward
    dx1, grads1 = net.backward(dy1, caches1)
    dx2, grads2 = net.backward(dy2, caches2)
    np.testing.assert_array_equal(dx1, dx1_alone)
    for k in grads1:
        np.testing.assert_array_equal(grads1[k], grads1_alone[k])
        assert not np.array_equal(grads1[k], grads2[k])


def test_identical_init_for_a_seed_and_documented_scales():
    def make(seed):
        return mlp(np.random.default_rng(seed), np.float32).state_dict()

    a, b, c = make(5), make(5), make(6)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["0.W"], c["0.W"])
    rng = np.random.default_rng(0)
    np.testing.assert_allclose(Linear(400, 300, rng=rng).params["W"].std(), np.sqrt(2 / 400), rtol=0.02)
    np.testing.assert_allclose(Linear(400, 300, rng=rng, init="xavier").params["W"].std(), np.sqrt(2 / 700), rtol=0.02)
    np.testing.assert_allclose(Conv2d(20, 30, 5, rng=rng).params["W"].std(), np.sqrt(2 / 500), rtol=0.02)
    zero = Linear(3, 2, rng=rng, init="zeros")
    assert not zero.params["W"].any() and not zero.params["b"].any()
    assert zero.params["W"].dtype == np.float32


def test_state_dict_round_trip_keeps_references():
    source, target = mlp(np.random.default_rng(1)), mlp(np.random.default_rng(2))
    x = np.random.default_rng(3).standard_normal((4, 4))
    source.forward(x)  # moves BatchNorm's running stats away from their initial values
    state = source.state_dict()
    assert set(state) == {*source.params, "1.running_mean", "1.running_var"}
    assert all(type(v) is np.ndarray for v in state.values())
    arrays = [*target.params.values(), *target.buffers.values()]
    target.load_state_dict(state)
    assert [*target.params.values(), *target.buffers.values()] == arrays  # same objects, new values
    for train in (True, False):
        np.testing.assert_array_equal(target.forward(x, train=train)[0], source.forward(x, train=train)[0])
    state["0.W"][...] = 0.0  # the state dict is a copy, not a view
    assert target.params["0.W"].any()


def test_load_state_dict_rejects_mismatches():
    net = mlp(np.random.default_rng(0))
    state = net.state_dict()
    with pytest.raises(ValueError, match=r"missing \['0.b'\], unexpected \['0.bias'\]"):
        net.load_state_dict({**{k: v for k, v in state.items() if k != "0.b"}, "0.bias": state["0.b"]})
    with pytest.raises(ValueError, match=r"'0.W' has shape \(6, 4\), expected \(4, 6\)"):
        net.load_state_dict({**state, "0.W": state["0.W"].T})


def test_num_params():
    net = Sequential([Conv2d(3, 8, 3, rng=np.random.default_rng(0)), BatchNorm(8), Flatten(),
                      Linear(10, 2, rng=np.random.default_rng(0))])
    assert net.num_params() == (8 * 3 * 9 + 8) + 2 * 8 + (10 * 2 + 2)
    assert ReLU().num_params() == 0 and MaxPool2d(2, 2).params == {}


def test_inference_mode_is_deterministic_and_leaves_buffers_alone():
    rng = np.random.default_rng(4)
    net = mlp(rng)
    x = rng.standard_normal((6, 4))
    before = net.state_dict()
    y1, _ = net.forward(x, train=False)
    y2, _ = net.forward(x[:1], train=False)  # one example works at inference
    np.testing.assert_array_equal(y1[:1], y2)
    after = net.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_bad_constructor_values_are_clear_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="in_dim must be a positive integer .* got 0"):
        Linear(0, 3, rng=rng)
    with pytest.raises(ValueError, match="unknown init 'glorot'; choose one of he, xavier, zeros"):
        Linear(2, 3, rng=rng, init="glorot")
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        Linear(2, 3, rng=0)
    with pytest.raises(ValueError, match="pad must be a non-negative integer"):
        Conv2d(1, 1, 3, pad=-1, rng=rng)
    with pytest.raises(ValueError, match="stride must be a positive integer"):
        MaxPool2d(2, 0)
    with pytest.raises(TypeError, match="Sequential item 1 is a ufunc, not a minidni Layer"):
        Sequential([ReLU(), np.tanh])


def test_bad_input_shapes_are_clear_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"Linear\(4, 2\) expects x of shape \(N, 4\), got \(3, 5\)"):
        Linear(4, 2, rng=rng).forward(np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match=r"expects x of shape \(N, 3, H, W\), got \(2, 2, 5, 5\)"):
        Conv2d(3, 1, 3, rng=rng).forward(np.zeros((2, 2, 5, 5), np.float32))


def test_layer_base_is_abstract():
    with pytest.raises(NotImplementedError, match="Layer does not implement forward"):
        Layer().forward(np.zeros(2))


@pytest.mark.parametrize("make", [mlp, convnet])
def test_layers_agree_across_backends(xp, make):
    """Same seed -> same weights on every backend; float32 forward within ~1e-5 and backward ~1e-4 of NumPy's."""
    net = make(np.random.default_rng(7), np.float32)  # on the backend the xp fixture selected
    backend.set_backend("numpy")
    reference = make(np.random.default_rng(7), np.float32)
    for k, p in net.params.items():
        assert get_xp(p) is xp
        np.testing.assert_array_equal(to_numpy(p), reference.params[k])
    rng = np.random.default_rng(8)
    x = rng.standard_normal((4, 4) if make is mlp else (4, 2, 5, 6)).astype(np.float32)
    y, caches = net.forward(to_device(x, xp))
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx, grads = net.backward(to_device(dy, xp), caches)
    y_ref, caches_ref = reference.forward(x)
    dx_ref, grads_ref = reference.backward(dy, caches_ref)
    np.testing.assert_allclose(to_numpy(y), y_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_numpy(dx), dx_ref, rtol=1e-4, atol=1e-4)
    for k in grads_ref:
        np.testing.assert_allclose(to_numpy(grads[k]), grads_ref[k], rtol=1e-4, atol=1e-4)
    for k in reference.buffers:
        np.testing.assert_allclose(to_numpy(net.buffers[k]), reference.buffers[k], rtol=1e-5, atol=1e-6)
