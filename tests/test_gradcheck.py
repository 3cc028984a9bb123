"""The gradient checker must pass right backwards and fail planted wrong ones."""

from __future__ import annotations

import numpy as np
import pytest

from minidni.functional.activations import relu_backward, relu_forward
from minidni.functional.linear import linear_backward, linear_forward
from minidni.gradcheck import GradientCheckError, adjoint_check, check_pair, elementwise_check, numerical_gradient


def _linear_inputs(seed, n=4, d=3, m=3):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((n, d)), rng.standard_normal((d, m)), rng.standard_normal(m)]


def relu_backward_without_mask(dy, mask):
    return dy  # planted bug: forgets that the gradient is 0 where x <= 0


def linear_backward_transposed_dW(dy, cache):
    dx, dW, db = linear_backward(dy, cache)
    return dx, dW.T, db  # planted bug: square W hides the wrong orientation from shape checks


def linear_backward_scaled_dW(dy, cache):
    dx, dW, db = linear_backward(dy, cache)
    return dx, dW * 1.01, db  # planted bug: a 1% error


@pytest.mark.parametrize("elementwise", [False, True])
def test_right_backwards_pass_with_tiny_errors(elementwise):
    errors = check_pair(linear_forward, linear_backward, _linear_inputs(0), names=["x", "W", "b"],
                        elementwise=elementwise)
    assert set(errors) == {"x", "W", "b"}
    x = np.random.default_rng(1).standard_normal((3, 5))
    errors.update(check_pair(relu_forward, relu_backward, [x], elementwise=elementwise))
    assert max(errors.values()) < 1e-6


@pytest.mark.parametrize("elementwise", [False, True])
def test_relu_backward_without_mask_fails(elementwise):
    x = np.random.default_rng(2).standard_normal((3, 5))
    with pytest.raises(GradientCheckError, match="input 0"):
        check_pair(relu_forward, relu_backward_without_mask, [x], elementwise=elementwise)


@pytest.mark.parametrize("wrong_backward", [linear_backward_transposed_dW, linear_backward_scaled_dW])
@pytest.mark.parametrize("elementwise", [False, True])
def test_wrong_dW_fails_and_names_W(wrong_backward, elementwise):
    with pytest.raises(GradientCheckError, match=r"for W\b.*relative error") as info:
        check_pair(linear_forward, wrong_backward, _linear_inputs(3), names=["x", "W", "b"], elementwise=elementwise)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("seed", range(5))
def test_adjoint_check_catches_one_percent_errors_for_any_seed(seed):
    with pytest.raises(GradientCheckError):
        check_pair(linear_forward, linear_backward_scaled_dW, _linear_inputs(seed), seed=seed)


def test_numerical_gradient_of_a_known_function():
    x = np.random.default_rng(4).standard_normal((2, 3))
    np.testing.assert_allclose(numerical_gradient(lambda a: (a ** 3).sum(), x), 3 * x ** 2, rtol=1e-8, atol=1e-9)
    assert not np.shares_memory(x, numerical_gradient(lambda a: a.sum(), x))


def test_numerical_gradient_leaves_its_input_unchanged():
    x = np.random.default_rng(5).standard_normal(4)
    before = x.copy()
    numerical_gradient(lambda a: (a * a).sum(), x)
    np.testing.assert_array_equal(x, before)


def test_tuple_outputs_and_scalar_functions():
    rng = np.random.default_rng(6)
    x = rng.standard_normal(4)
    douts = (rng.standard_normal(4), rng.standard_normal(4))
    grad = douts[0] * 2 + douts[1] * 2 * x  # J^T dout for f(x) = (2x, x^2)
    for check in (adjoint_check, elementwise_check):
        check(lambda a: (2 * a, a * a), [x], [grad], douts)
        check(lambda a: (a * a).sum(), [x], [2 * x], None)
        with pytest.raises(GradientCheckError):
            check(lambda a: (2 * a, a * a), [x], [grad + 0.1], douts)


def test_float32_is_rejected():
    x, W, b = (a.astype(np.float32) for a in _linear_inputs(7))
    with pytest.raises(ValueError, match="float64 only.*float32"):
        check_pair(linear_forward, linear_backward, [x, W, b])
    with pytest.raises(ValueError, match="float64"):
        numerical_gradient(lambda a: a.sum(), x)


def test_mismatched_gradients_are_reported():
    x, W, b = _linear_inputs(8)
    f = lambda x, W, b: linear_forward(x, W, b)[0]  # noqa: E731
    dy = np.ones((4, 3))
    with pytest.raises(ValueError, match="2 gradients for 3 inputs"):
        adjoint_check(f, [x, W, b], [x, W], dy)
    with pytest.raises(GradientCheckError, match=r"gradient of b has shape \(4,\)"):
        adjoint_check(f, [x, W, b], [x, W, np.zeros(4)], dy, names=["x", "W", "b"])
