"""LSTM: forward vs a loop of single steps, golden gate order, float64 gradient checks."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minidni import backend
from minidni.functional import lstm_backward, lstm_forward, lstm_step_backward, lstm_step_forward
from minidni.gradcheck import check_pair


def _inputs(rng, T, N, D, H, dtype=np.float64, scale=0.5):
    x = rng.standard_normal((T, N, D)).astype(dtype)
    h0, c0 = (rng.standard_normal((N, H)).astype(dtype) for _ in range(2))
    Wx = (scale * rng.standard_normal((D, 4 * H))).astype(dtype)
    Wh = (scale * rng.standard_normal((H, 4 * H))).astype(dtype)
    b = (scale * rng.standard_normal(4 * H)).astype(dtype)
    return x, h0, c0, Wx, Wh, b


def _reference_step(x, h, c, Wx, Wh, b):
    """The textbook equations, one unit at a time (slow, obviously correct)."""
    N, H = h.shape
    h_next, c_next = np.empty_like(h), np.empty_like(c)
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    for n in range(N):
        for j in range(H):
            pre = [x[n] @ Wx[:, k * H + j] + h[n] @ Wh[:, k * H + j] + b[k * H + j] for k in range(4)]
            i, f, g, o = sig(pre[0]), sig(pre[1]), np.tanh(pre[2]), sig(pre[3])
            c_next[n, j] = f * c[n, j] + i * g
            h_next[n, j] = o * np.tanh(c_next[n, j])
    return h_next, c_next


def test_forward_matches_textbook_loop(rng):
    x, h0, c0, Wx, Wh, b = _inputs(rng, T=4, N=3, D=2, H=5)
    hs, cT, _ = lstm_forward(x, h0, c0, Wx, Wh, b)
    h, c = h0, c0
    for t in range(4):
        h, c = _reference_step(x[t], h, c, Wx, Wh, b)
        np.testing.assert_allclose(hs[t], h, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cT, c, rtol=1e-12, atol=1e-12)


def test_sequence_equals_chained_steps_forward_and_backward(rng):
    x, h0, c0, Wx, Wh, b = _inputs(rng, T=3, N=2, D=3, H=4)
    hs, cT, cache = lstm_forward(x, h0, c0, Wx, Wh, b)
    dhs, dcT = rng.standard_normal(hs.shape), rng.standard_normal(cT.shape)
    seq_grads = lstm_backward(dhs, dcT, cache)
    h, c, caches = h0, c0, []
    for t in range(3):
        h, c, step_cache = lstm_step_forward(x[t], h, c, Wx, Wh, b)
        caches.append(step_cache)
    dh, dc = np.zeros_like(h0), dcT
    dx, sums = [None] * 3, [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
    for t in reversed(range(3)):
        dx[t], dh, dc, dWx, dWh, db = lstm_step_backward(dhs[t] + dh, dc, caches[t])
        sums = [s + g for s, g in zip(sums, (dWx, dWh, db))]
    for got, want in zip(seq_grads, (np.stack(dx), dh, dc, *sums)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_golden_gate_order_is_i_f_g_o():
    """One unit, x = 0, h0 = 0: the bias alone opens one gate block at a time."""
    H, big = 1, 50.0  # sigmoid(50) = 1, sigmoid(-50) = 0 to double precision
    x, h0, c0 = np.zeros((1, 1, 1)), np.zeros((1, H)), np.full((1, H), 0.5)
    Wx, Wh = np.zeros((1, 4 * H)), np.zeros((H, 4 * H))
    # i open, f closed, g = tanh(0.3), o open: c = 0*0.5 + 1*tanh(0.3), h = tanh(c)
    hs, cT, _ = lstm_forward(x, h0, c0, Wx, Wh, np.array([big, -big, 0.3, big]))
    np.testing.assert_allclose(cT, [[np.tanh(0.3)]], atol=1e-15)
    np.testing.assert_allclose(hs[-1], [[np.tanh(np.tanh(0.3))]], atol=1e-15)
    # i closed, f open: the cell keeps c0; o closed hides it from h
    hs, cT, _ = lstm_forward(x, h0, c0, Wx, Wh, np.array([-big, big, 0.3, -big]))
    np.testing.assert_allclose(cT, [[0.5]], atol=1e-15)
    np.testing.assert_allclose(hs[-1], [[0.0]], atol=1e-15)


@given(T=st.integers(1, 4), N=st.integers(1, 3), D=st.integers(1, 4), H=st.integers(1, 4),
       inject_cell=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_sequence_backward_matches_finite_differences(T, N, D, H, inject_cell, seed):
    """Random dhs (which include a gradient injected at the last hidden state) and dcT."""
    rng = np.random.default_rng(seed)
    inputs = list(_inputs(rng, T, N, D, H))
    if inject_cell:
        check_pair(lstm_forward, lstm_backward, inputs, names=["x", "h0", "c0", "Wx", "Wh", "b"], seed=seed)
    else:  # dcT = None: nothing arrives at the final cell state from outside
        check_pair(lambda *a: lstm_forward(*a)[0::2], lambda dhs, cache: lstm_backward(dhs, None, cache),
                   inputs, names=["x", "h0", "c0", "Wx", "Wh", "b"], seed=seed)


def test_gradient_injected_only_at_final_state_elementwise(rng):
    """dhs is zero except dhs[-1]; dcT given: the DNI injection pattern, checked element by element."""
    inputs = list(_inputs(rng, T=3, N=2, D=2, H=2))
    f = lambda *a: (lstm_forward(*a)[0][-1], lstm_forward(*a)[1])  # noqa: E731  (h_T, c_T)
    hs, cT, cache = lstm_forward(*inputs)
    dhT, dcT = rng.standard_normal(cT.shape), rng.standard_normal(cT.shape)
    dhs = np.zeros_like(hs)
    dhs[-1] = dhT
    grads = lstm_backward(dhs, dcT, cache)
    from minidni.gradcheck import elementwise_check
    elementwise_check(f, inputs, grads, (dhT, dcT), names=["x", "h0", "c0", "Wx", "Wh", "b"])


@given(N=st.integers(1, 3), D=st.integers(1, 4), H=st.integers(1, 4), seed=st.integers(0, 2**31 - 1))
def test_step_backward_matches_finite_differences(N, D, H, seed):
    rng = np.random.default_rng(seed)
    x, h0, c0, Wx, Wh, b = _inputs(rng, 1, N, D, H)
    check_pair(lstm_step_forward, lstm_step_backward, [x[0], h0, c0, Wx, Wh, b],
               names=["x", "h", "c", "Wx", "Wh", "b"], seed=seed)


def test_float32_in_float32_out(rng):
    inputs = _inputs(rng, T=2, N=3, D=2, H=4, dtype=np.float32)
    hs, cT, cache = lstm_forward(*inputs)
    assert hs.dtype == cT.dtype == np.float32
    grads = lstm_backward(np.ones_like(hs), np.ones_like(cT), cache)
    assert all(g.dtype == np.float32 for g in grads)


def test_stable_at_huge_preactivations(rng):
    x, h0, c0, Wx, Wh, b = _inputs(rng, T=2, N=2, D=2, H=3, scale=1e4)
    hs, cT, cache = lstm_forward(x, h0, c0, Wx, Wh, b)
    grads = lstm_backward(np.ones_like(hs), np.ones_like(cT), cache)
    assert all(np.isfinite(a).all() for a in (hs, cT, *grads))


def test_bad_weight_shapes_are_named(rng):
    x, h0, c0, Wx, Wh, b = _inputs(rng, T=2, N=2, D=3, H=4)
    with pytest.raises(ValueError, match=r"Wx \(D=3, 4H=16\)"):
        lstm_forward(x, h0, c0, Wx[:, :8], Wh, b)


def test_backend_parity(xp, rng):
    inputs = _inputs(rng, T=3, N=4, D=5, H=6, dtype=np.float32)
    hs, cT, cache = lstm_forward(*backend.to_device(list(inputs), xp))
    dhs = rng.standard_normal(hs.shape).astype(np.float32)
    grads = lstm_backward(backend.to_device(dhs, xp), None, cache)
    ref_hs, _, ref_cache = lstm_forward(*inputs)
    ref_grads = lstm_backward(dhs, None, ref_cache)
    np.testing.assert_allclose(backend.to_numpy(hs), ref_hs, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(backend.to_numpy(g), r, rtol=1e-4, atol=1e-4)


# -- keep (per-row state resets inside a window) -----------------------------------------


@given(T=st.integers(1, 4), N=st.integers(1, 3), D=st.integers(1, 3), H=st.integers(1, 3),
       seed=st.integers(0, 2**31 - 1))
def test_backward_with_keep_matches_finite_differences(T, N, D, H, seed):
    rng = np.random.default_rng(seed)
    inputs = list(_inputs(rng, T, N, D, H))
    keep = (rng.random((T, N)) < 0.6).astype(np.float64)
    check_pair(lambda *a: lstm_forward(*a, keep=keep), lstm_backward, inputs,
               names=["x", "h0", "c0", "Wx", "Wh", "b"], seed=seed)


def test_keep_equals_restarting_from_zero(rng):
    """Row 0 resets before step 2: its steps 2.. equal a fresh run from a zero state, and
    nothing of their gradient reaches steps 0-1 or h0; row 1 (no reset) is untouched."""
    x, h0, c0, Wx, Wh, b = _inputs(rng, T=4, N=2, D=3, H=2)
    keep = np.ones((4, 2))
    keep[2, 0] = 0.0
    hs, cT, cache = lstm_forward(x, h0, c0, Wx, Wh, b, keep=keep)
    plain_hs, _, _ = lstm_forward(x, h0, c0, Wx, Wh, b)
    fresh_hs, fresh_cT, _ = lstm_forward(x[2:, :1], np.zeros((1, 2)), np.zeros((1, 2)), Wx, Wh, b)
    np.testing.assert_allclose(hs[:2], plain_hs[:2], rtol=1e-14)
    np.testing.assert_allclose(hs[:, 1], plain_hs[:, 1], rtol=1e-14)
    np.testing.assert_allclose(hs[2:, :1], fresh_hs, rtol=1e-14)
    np.testing.assert_allclose(cT[:1], fresh_cT, rtol=1e-14)
    dhs = np.zeros_like(hs)
    dhs[2:] = 1.0  # loss only after the reset
    dx, dh0, dc0, *_ = lstm_backward(dhs, np.ones_like(cT), cache)
    assert np.all(dx[:2, 0] == 0) and np.all(dh0[0] == 0) and np.all(dc0[0] == 0)
    assert np.all(dh0[1] != 0)


def test_keep_zero_at_first_step_cuts_the_initial_state(rng):
    x, h0, c0, Wx, Wh, b = _inputs(rng, T=3, N=2, D=2, H=3)
    keep = np.ones((3, 2))
    keep[0, 1] = 0.0
    hs, cT, cache = lstm_forward(x, h0, c0, Wx, Wh, b, keep=keep)
    zero_hs, _, _ = lstm_forward(x[:, 1:], np.zeros((1, 3)), np.zeros((1, 3)), Wx, Wh, b)
    np.testing.assert_allclose(hs[:, 1:], zero_hs, rtol=1e-14)
    _, dh0, dc0, *_ = lstm_backward(np.ones_like(hs), np.ones_like(cT), cache)
    assert np.all(dh0[1] == 0) and np.all(dc0[1] == 0) and np.all(dh0[0] != 0)


def test_keep_shape_is_checked(rng):
    x, h0, c0, Wx, Wh, b = _inputs(rng, T=2, N=2, D=3, H=4)
    with pytest.raises(ValueError, match=r"keep must have shape \(T, N\) = \(2, 2\)"):
        lstm_forward(x, h0, c0, Wx, Wh, b, keep=np.ones((2, 3)))


# -- the layer ----------------------------------------------------------------------------


def test_layer_forward_backward_and_state(rng):
    from minidni.layers import LSTM
    lstm = LSTM(3, 4, rng=rng, dtype=np.float64)
    assert set(lstm.params) == {"Wx", "Wh", "b"}
    np.testing.assert_array_equal(lstm.params["b"][4:8], 1.0)  # forget-gate bias
    x = rng.standard_normal((5, 2, 3))
    (hs, cT), cache = lstm.forward(x)  # zero initial state
    ref_hs, ref_cT, _ = lstm_forward(x, np.zeros((2, 4)), np.zeros((2, 4)), *lstm.params.values())
    np.testing.assert_array_equal(hs, ref_hs)
    # carrying the state over two windows equals one long window
    (hs1, c1), _ = lstm.forward(x[:2])
    (hs2, c2), _ = lstm.forward(x[2:], (hs1[-1], c1))
    np.testing.assert_allclose(np.concatenate([hs1, hs2]), hs, rtol=1e-13)
    dx, dh0, dc0, grads = lstm.backward(np.ones_like(hs), None, cache)
    assert dx.shape == x.shape and dh0.shape == dc0.shape == (2, 4)
    assert {k: g.shape for k, g in grads.items()} == {k: p.shape for k, p in lstm.params.items()}


def test_layer_float32_and_bad_state(rng):
    from minidni.layers import LSTM
    lstm = LSTM(3, 4, rng=rng)
    (hs, cT), cache = lstm.forward(rng.standard_normal((2, 5, 3)).astype(np.float32))
    assert hs.dtype == cT.dtype == np.float32
    assert all(g.dtype == np.float32 for g in lstm.backward(np.ones_like(hs), cT, cache)[3].values())
    with pytest.raises(ValueError, match="state must be"):
        lstm.forward(np.zeros((2, 5, 3), np.float32), (np.zeros((5, 3), np.float32),) * 2)
