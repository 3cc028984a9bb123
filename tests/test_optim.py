"""Optimisers against hand-computed updates, in-place semantics, clipping, the step schedule, bad values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from minidni import backend
from minidni.backend import get_xp, to_numpy
from minidni.layers import Linear
from minidni.optim import SGD, Adam, StepDecay, clip_by_global_norm

P0 = [1.0, -1.0, 2.0]  # the initial parameter of every two-step test
G1, G2 = [0.5, -2.0, 0.0], [-1.0, 3.0, 0.25]  # and its two gradients


def _param_and_grads(xp, dtype=np.float64):
    p = xp.asarray(P0, dtype=dtype)
    return {"w": p}, [{"w": xp.asarray(g, dtype=dtype)} for g in (G1, G2)]


def test_sgd_two_steps(xp):
    params, grads = _param_and_grads(xp)
    opt = SGD(params, lr=0.1)
    for g in grads:
        opt.step(g)
    expected = [p - 0.1 * (a + b) for p, a, b in zip(P0, G1, G2)]
    np.testing.assert_allclose(to_numpy(params["w"]), expected, rtol=1e-15)


def test_sgd_momentum_two_steps(xp):
    params, grads = _param_and_grads(xp)
    opt = SGD(params, lr=0.1, momentum=0.9)
    for g in grads:
        opt.step(g)
    # v1 = g1, p1 = p0 - lr g1; v2 = 0.9 g1 + g2, p2 = p1 - lr v2
    expected = [p - 0.1 * a - 0.1 * (0.9 * a + b) for p, a, b in zip(P0, G1, G2)]
    np.testing.assert_allclose(to_numpy(params["w"]), expected, rtol=1e-15)
    assert get_xp(opt.velocity["w"]) is xp


def test_adam_two_steps(xp):
    params, grads = _param_and_grads(xp)
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    opt = Adam(params, lr=lr, betas=(b1, b2), eps=eps)
    opt.step(grads[0])
    # Adam's first step is lr * sign(g) (up to eps), whatever the gradient's size
    np.testing.assert_allclose(to_numpy(params["w"]), np.array(P0) - lr * np.sign(G1), rtol=1e-8)
    opt.step(grads[1])
    expected = []
    for p, g1, g2 in zip(P0, G1, G2):
        m, v = (1 - b1) * g1, (1 - b2) * g1 * g1
        p -= lr * (m / (1 - b1)) / (math.sqrt(v / (1 - b2)) + eps)  # step 1: about lr * sign(g1)
        m, v = b1 * m + (1 - b1) * g2, b2 * v + (1 - b2) * g2 * g2
        p -= lr * (m / (1 - b1 ** 2)) / (math.sqrt(v / (1 - b2 ** 2)) + eps)
        expected.append(p)
    np.testing.assert_allclose(to_numpy(params["w"]), expected, rtol=1e-12)
    assert opt.t == 2
    assert get_xp(opt.m["w"]) is xp and get_xp(opt.v["w"]) is xp


@pytest.mark.parametrize("make", [lambda p: SGD(p, 0.1, momentum=0.5), lambda p: Adam(p, 0.1)])
def test_step_updates_layer_params_in_place_and_keeps_float32(xp, make):
    layer = Linear(3, 2, rng=np.random.default_rng(0))
    W = layer.params["W"]
    before = to_numpy(W).copy()
    opt = make(layer.params)
    grads = {k: xp.ones_like(p) for k, p in layer.params.items()}
    opt.step(grads)
    opt.step(grads)
    assert layer.params["W"] is W and W.dtype == np.float32 and layer.params["b"].dtype == np.float32
    assert np.all(to_numpy(W) < before)


def test_lr_is_settable_and_validated():
    params, (g1, _) = _param_and_grads(np)
    opt = SGD(params, lr=1.0)
    opt.lr = 0.5
    opt.step(g1)
    np.testing.assert_allclose(params["w"], [0.75, 0.0, 2.0])
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="lr must be a finite number > 0"):
            opt.lr = bad


def test_bad_hyperparameters_are_rejected():
    params, _ = _param_and_grads(np)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\), got 1.0"):
        SGD(params, 0.1, momentum=1.0)
    with pytest.raises(ValueError, match=r"beta2 must be in \[0, 1\), got 1.5"):
        Adam(params, betas=(0.9, 1.5))
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        Adam(params, eps=0.0)
    with pytest.raises(ValueError, match="non-empty dict"):
        Adam({})


def test_grads_must_match_params():
    params, (g1, _) = _param_and_grads(np)
    opt = Adam(params)
    with pytest.raises(ValueError, match=r"missing \['w'\], unexpected \['W'\]"):
        opt.step({"W": g1["w"]})
    with pytest.raises(ValueError, match=r"grad 'w' has shape \(2,\) but the param has shape \(3,\)"):
        opt.step({"w": np.zeros(2)})
    assert opt.t == 0  # nothing was applied


def test_clip_by_global_norm(xp):
    grads = {"a": xp.asarray([3.0, 0.0], dtype=xp.float32), "b": xp.asarray([[4.0]], dtype=xp.float32)}
    clipped, norm = clip_by_global_norm(grads, max_norm=1.0)
    assert get_xp(norm) is xp and norm.shape == () and float(norm) == pytest.approx(5.0)
    np.testing.assert_allclose(to_numpy(clipped["a"]), [0.6, 0.0], rtol=1e-6)
    np.testing.assert_allclose(to_numpy(clipped["b"]), [[0.8]], rtol=1e-6)
    assert clipped["a"].dtype == np.float32
    np.testing.assert_array_equal(to_numpy(grads["a"]), [3.0, 0.0])  # inputs untouched
    unclipped, norm = clip_by_global_norm(grads, max_norm=10.0)
    np.testing.assert_array_equal(to_numpy(unclipped["b"]), [[4.0]])
    with pytest.raises(ValueError, match="max_norm must be a finite number > 0"):
        clip_by_global_norm(grads, 0.0)


def test_step_decay():
    schedule = StepDecay(0.1, milestones=[10, 20], gamma=0.5)
    assert [schedule(s) for s in (0, 9, 10, 19, 20, 1000)] == [0.1, 0.1, 0.05, 0.05, 0.025, 0.025]
    with pytest.raises(ValueError, match="strictly increasing"):
        StepDecay(0.1, milestones=[20, 10])
    with pytest.raises(ValueError, match=r"gamma must be in \(0, 1\]"):
        StepDecay(0.1, milestones=[10], gamma=0.0)
    with pytest.raises(ValueError, match="step must be 0 or more"):
        schedule(-1)


@pytest.mark.gpu
@pytest.mark.skipif(not backend.cupy_available(), reason="fused CuPy kernel: CuPy is not installed or no NVIDIA GPU is visible")
@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-5), (np.float64, 1e-12)])
def test_fused_cupy_adam_kernel_matches_the_numpy_reference(dtype, rtol):
    """On CuPy FlatAdam is one ElementwiseKernel per buffer; over many steps it follows the per-tensor NumPy Adam."""
    from minidni import kernels
    from minidni.flat import FlatParams
    from minidni.optim import FlatAdam

    cp = backend.set_backend("cupy")
    assert kernels.available(cp)
    layers = {"a": Linear(6, 5, rng=np.random.default_rng(0), dtype=dtype),
              "b": Linear(5, 3, rng=np.random.default_rng(1), dtype=dtype)}
    ref_params = {f"{n}.{k}": to_numpy(v).copy() for n, layer in layers.items() for k, v in layer.params.items()}
    flat = FlatParams(layers)
    ref, fused = Adam(ref_params, lr=1e-2), FlatAdam(flat, lr=1e-2)
    rng = np.random.default_rng(2)
    for _ in range(50):
        grads = {k: rng.standard_normal(p.shape).astype(dtype) for k, p in ref_params.items()}
        ref.step(grads)
        fused.step({k: cp.asarray(g) for k, g in grads.items()})
    for k, p in ref_params.items():
        np.testing.assert_allclose(to_numpy(flat.params[k]), p, rtol=rtol, atol=rtol * 1e-2, err_msg=k)
        np.testing.assert_allclose(to_numpy(fused.v[k]), ref.v[k], rtol=rtol, err_msg=k)
