"""Gradient checks by finite differences, in float64 only.

Two checks compare an analytic backward with central differences of the forward,
and raise :class:`GradientCheckError` (naming the input and the relative error)
when they disagree; on success they return ``{input name: relative error}``.

**Adjoint (vector-Jacobian) test** -- cheap, any size. For each input ``x_i``, a
random direction ``v`` (from ``numpy.random.default_rng([seed, 1])``) gives

    <dout, J v>    ~ <dout, f(.., x_i + eps v, ..) - f(.., x_i - eps v, ..)> / (2 eps)
    <J^T dout, v>  = sum(grads[i] * v)          (grads from your backward)

and the two must agree: ``|lhs - rhs| <= atol + rtol * max(|lhs|, |rhs|) + noise``,
where ``noise = 10 ulp * sum|dout * f(inputs)| / (2 eps)`` allows for rounding in
the difference of two nearly equal pairings (it matters only when ``lhs`` is
tiny through cancellation).

**Elementwise test** -- one pair of forward calls per element, for tiny shapes:
the full numerical gradient of ``<dout, f(inputs)>`` is compared with ``grads``
element by element (same tolerance rule, elementwise).

Usage, for a forward/backward pair (the usual case; douts are drawn at random):

    >>> from minidni.gradcheck import check_pair
    >>> x, W, b = (rng.standard_normal(s) for s in [(4, 3), (3, 5), (5,)])   # float64
    >>> errors = check_pair(linear_forward, linear_backward, [x, W, b], names=["x", "W", "b"])
    >>> sorted(errors) == ["W", "b", "x"] and max(errors.values()) < 1e-6   # typically ~1e-10
    True
    >>> check_pair(lambda x, W, b: conv2d_forward(x, W, b, stride=2, pad=1),
    ...            conv2d_backward, [x, W, b], elementwise=True)       # tiny shapes only

``forward(*inputs)`` must return ``(*outputs, cache)`` and ``backward(*douts,
cache)`` one gradient per input (a single array when there is one input), e.g.
``lstm_step_forward -> (h, c, cache)`` and ``lstm_step_backward(dh, dc, cache)``.
Inputs without a gradient (running statistics, labels, hyperparameters) are
closed over in a lambda. Forwards must not modify their inputs in place.

The lower-level checks take the output function and the gradients directly:

    >>> y, cache = linear_forward(x, W, b)
    >>> dy = rng.standard_normal(y.shape)
    >>> grads = linear_backward(dy, cache)
    >>> f = lambda x, W, b: linear_forward(x, W, b)[0]
    >>> adjoint_check(f, [x, W, b], grads, dy, names=["x", "W", "b"])
    >>> elementwise_check(f, [x, W, b], grads, dy)

``f`` may return one array or a tuple of arrays (then ``dout`` is a matching
tuple); with ``dout=None``, ``f`` must return a scalar (e.g. a loss) and
:func:`numerical_gradient` of that scalar is used. Every input, gradient and
dout must be float64 (``ValueError`` otherwise): in float32, finite differences
are noise. Works on NumPy and CuPy arrays alike (the directions are drawn on the
host and moved to the inputs' backend).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from minidni.backend import get_xp, to_device, to_numpy

__all__ = [
    "GradientCheckError",
    "numerical_gradient",
    "adjoint_check",
    "elementwise_check",
    "check_pair",
]


class GradientCheckError(AssertionError):
    """An analytic gradient disagrees with finite differences; the message names the input."""


def _as_tuple(a: Any) -> tuple:
    return tuple(a) if isinstance(a, (tuple, list)) else (a,)


def _require_float64(what: str, a: Any) -> None:
    if getattr(a, "dtype", None) != np.float64:
        raise ValueError(
            f"gradient checks run in float64 only, but {what} has dtype {getattr(a, 'dtype', type(a).__name__)}; "
            "cast it with .astype(numpy.float64)"
        )


def _names(names: Sequence[str] | None, count: int) -> list[str]:
    if names is None:
        return [f"input {i}" for i in range(count)]
    if len(names) != count:
        raise ValueError(f"got {len(names)} names for {count} inputs")
    return list(names)


def _validate(inputs, grads, dout, names):
    inputs = list(inputs)
    grads = _as_tuple(grads)
    if len(grads) != len(inputs):
        raise ValueError(f"got {len(grads)} gradients for {len(inputs)} inputs")
    names = _names(names, len(inputs))
    for name, x, g in zip(names, inputs, grads):
        _require_float64(name, x)
        _require_float64(f"the gradient of {name}", g)
        if g.shape != x.shape:
            raise GradientCheckError(f"the gradient of {name} has shape {g.shape} but {name} has shape {x.shape}")
    if dout is not None:
        for i, d in enumerate(_as_tuple(dout)):
            _require_float64(f"dout {i}", d)
    return inputs, grads, names


def _pairing(f: Callable, dout: Any) -> Callable:
    """``pairing(*inputs) -> (value, size)`` as host floats: ``value = <dout, f(*inputs)>`` (``f(*inputs)``
    itself when dout is None) and ``size = sum |dout * f(*inputs)|``, which bounds its rounding error."""
    if dout is None:
        def scalar(*inputs):
            value = float(to_numpy(f(*inputs)))
            return value, abs(value)

        return scalar
    douts = _as_tuple(dout)

    def pairing(*inputs):
        outs = _as_tuple(f(*inputs))
        if len(outs) != len(douts):
            raise ValueError(f"f returned {len(outs)} outputs but {len(douts)} douts were given")
        products = [o * d for o, d in zip(outs, douts)]
        value = sum(float(to_numpy(p.sum())) for p in products)
        return value, sum(float(to_numpy(abs(p).sum())) for p in products)

    return pairing


def _roundoff(size: float, eps: float) -> float:
    """Allowance for rounding in a central difference of a pairing of this size: 10 ulp, divided by 2 eps."""
    return 10.0 * np.finfo(np.float64).eps * size / (2.0 * eps)


def _disagreement(numeric, analytic, rtol: float, atol: float):
    """Elementwise relative error and whether it breaks ``|n - a| <= atol + rtol * max(|n|, |a|)``."""
    diff = np.abs(numeric - analytic)
    scale = np.maximum(np.abs(numeric), np.abs(analytic))
    rel = diff / np.maximum(scale, np.finfo(np.float64).tiny)
    return rel, diff > atol + rtol * scale


def numerical_gradient(f: Callable, x, *, eps: float = 1e-6):
    """Central-difference gradient of a scalar function ``f(x)``, same shape as ``x`` (float64).

    ``f`` is called with a perturbed copy of ``x``, two calls per element, so keep
    ``x`` tiny. Returns an array on the backend of ``x``.
    """
    _require_float64("x", x)
    xp = get_xp(x)
    x = x.copy()
    grad = np.zeros(x.shape)
    for index in np.ndindex(*x.shape):
        original = x[index].copy()
        x[index] = original + eps
        plus = float(to_numpy(f(x)))
        x[index] = original - eps
        minus = float(to_numpy(f(x)))
        x[index] = original
        grad[index] = (plus - minus) / (2.0 * eps)
    return to_device(grad, xp)


def adjoint_check(f: Callable, inputs: Sequence, grads: Sequence, dout: Any, *, names: Sequence[str] | None = None,
                  eps: float = 1e-6, rtol: float = 1e-6, atol: float = 1e-9, seed: int = 0) -> dict[str, float]:
    """Check ``<dout, J_i v> == <grads[i], v>`` for every input ``i`` along a random direction ``v``.

    ``f(*inputs)`` returns the output (or a tuple of outputs); ``grads[i]`` is the
    analytic ``J_i^T dout`` from the backward; ``dout`` has the output's shape(s),
    or is None when ``f`` returns a scalar. Returns ``{name: relative error}``;
    raises :class:`GradientCheckError` naming the first input that fails.
    """
    inputs, grads, names = _validate(inputs, grads, dout, names)
    pairing = _pairing(f, dout)
    rng = np.random.default_rng([seed, 1])  # a stream distinct from a caller's default_rng(seed)
    errors = {}
    for i, (name, x, g) in enumerate(zip(names, inputs, grads)):
        v = to_device(rng.standard_normal(x.shape), get_xp(x))
        plus, size_plus = pairing(*inputs[:i], x + eps * v, *inputs[i + 1:])
        minus, size_minus = pairing(*inputs[:i], x - eps * v, *inputs[i + 1:])
        numeric = (plus - minus) / (2.0 * eps)
        analytic = float(to_numpy((g * v).sum()))
        noise = _roundoff(max(size_plus, size_minus), eps)
        rel, bad = _disagreement(np.float64(numeric), np.float64(analytic), rtol, atol + noise)
        errors[name] = float(rel)
        if bad:
            raise GradientCheckError(
                f"adjoint test failed for {name}: <dout, J v> = {numeric:.10g} by finite differences but "
                f"<J^T dout, v> = {analytic:.10g} from backward (relative error {float(rel):.3g} > rtol {rtol:g})"
            )
    return errors


def elementwise_check(f: Callable, inputs: Sequence, grads: Sequence, dout: Any, *, names: Sequence[str] | None = None,
                      eps: float = 1e-6, rtol: float = 1e-5, atol: float = 1e-8) -> dict[str, float]:
    """Compare ``grads[i]`` with the full numerical gradient of ``<dout, f(*inputs)>`` element by element.

    Same arguments as :func:`adjoint_check`; two forward calls per input element,
    so use tiny shapes. Returns ``{name: largest relative error}``; raises
    :class:`GradientCheckError` naming the input, the worst element and its error.
    """
    inputs, grads, names = _validate(inputs, grads, dout, names)
    pairing = _pairing(f, dout)
    errors = {}
    for i, (name, x, g) in enumerate(zip(names, inputs, grads)):
        numeric = to_numpy(numerical_gradient(lambda xi: pairing(*inputs[:i], xi, *inputs[i + 1:])[0], x, eps=eps))
        analytic = to_numpy(g)
        noise = _roundoff(pairing(*inputs)[1], eps)
        rel, bad = _disagreement(numeric, analytic, rtol, atol + noise)
        errors[name] = float(rel.max()) if rel.size else 0.0
        if bad.any():
            worst = np.unravel_index(np.argmax(np.where(bad, rel, -1.0)), rel.shape)
            raise GradientCheckError(
                f"elementwise check failed for {name} at index {tuple(int(k) for k in worst)}: numerical "
                f"{numeric[worst]:.10g} vs analytic {analytic[worst]:.10g} (relative error {rel[worst]:.3g} > "
                f"rtol {rtol:g}; {int(bad.sum())} of {bad.size} elements disagree)"
            )
    return errors


def check_pair(forward: Callable, backward: Callable, inputs: Sequence, *, names: Sequence[str] | None = None,
               elementwise: bool = False, seed: int = 0, **tolerances: float) -> dict[str, float]:
    """Gradient-check an op pair: ``forward(*inputs) -> (*outputs, cache)``, ``backward(*douts, cache) -> grads``.

    Draws each dout from ``numpy.random.default_rng([seed, 2])``, runs the backward and
    then :func:`adjoint_check` (or :func:`elementwise_check` when ``elementwise``);
    ``tolerances`` (eps, rtol, atol) are passed on. Returns ``{name: relative error}``.
    """
    inputs = list(inputs)
    for name, x in zip(_names(names, len(inputs)), inputs):
        _require_float64(name, x)
    *outputs, cache = forward(*inputs)
    rng = np.random.default_rng([seed, 2])  # distinct from the caller's default_rng(seed) data
    douts = tuple(to_device(rng.standard_normal(o.shape), get_xp(o)) for o in outputs)
    grads = backward(*douts, cache)

    def f(*xs):
        outs = forward(*xs)[:-1]
        return tuple(outs) if len(outs) > 1 else outs[0]

    dout = douts if len(douts) > 1 else douts[0]
    if elementwise:
        return elementwise_check(f, inputs, grads, dout, names=names, **tolerances)
    return adjoint_check(f, inputs, grads, dout, names=names, seed=seed, **tolerances)
