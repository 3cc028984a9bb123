"""The true future gradient at a window boundary (minidni.dni.future), checked three ways in float64."""

import numpy as np
import pytest

from minidni.dni.future import compare, future_gradient
from minidni.dni.recurrent import RecurrentTrainer, copy_loss
from minidni.tasks import CopyTaskStream, Curriculum
from minidni.tasks.copy import IN_CHANNELS, OUT_CHANNELS


def _setup(mode="dni", seed=0, T=3, B=3, H=5, warm=4):
    """A float64 trainer with nonzero M (a few windows of training) and its Copy stream."""
    rng = np.random.default_rng(seed)
    tr = RecurrentTrainer(IN_CHANNELS, OUT_CHANNELS, H, mode=mode, lr=3e-2, sg_lr=3e-2, rng=rng, dtype=np.float64)
    if tr.uses_sg:
        tr.sg.params["W"][...] = rng.normal(0, 0.3, tr.sg.params["W"].shape)
    stream = CopyTaskStream(Curriculum("copy", start_length=2), B, rng=np.random.default_rng([seed, 1]))
    for _ in range(warm):
        tr.train_window(*_window(stream, T))
    return tr, stream


def _window(stream, T):
    w = stream.next_window(T)
    x, target, mask = (a.astype(np.float64) for a in (w.x, w.target, w.mask))
    return x, (lambda logits: copy_loss(logits, target, mask)), w.episode_end


def _target_of_next_window(tr, stream, *, aux_in_target=False):
    """(the 1-window future gradient with the SG tail, the target the trainer regresses M on in that window)."""
    if tr.mode == "dni-aux":  # a nonzero aux head, so that its gradient is there to be left out (or not)
        tr.aux_in_target = aux_in_target
        tr.aux.params["W"][...] = np.random.default_rng(5).normal(0, 0.5, tr.aux.params["W"].shape)
    nxt = _window(stream, 3)
    expected = future_gradient(tr, tr.state, [nxt], discount=tr.sg_scale, tail=True)
    seen = []
    original = tr.bootstrap_target
    tr.bootstrap_target = lambda *a, **k: seen.append(original(*a, **k).copy()) or seen[-1]
    tr.train_window(*nxt)
    return expected, seen[0]


@pytest.mark.parametrize("mode", ["dni", "dni-aux"])
def test_one_window_with_the_tail_is_the_bootstrapped_target(mode):
    """For dni-aux too: M's target is the task + SG gradient only, without the aux loss's share."""
    expected, target = _target_of_next_window(*_setup(mode))
    kept = _kept_rows(target)
    assert kept.sum() > 0 and np.abs(expected * kept).max() > 1e-6  # a real comparison, not zeros
    np.testing.assert_allclose(target * kept, expected * kept, rtol=1e-12, atol=1e-14)


def _kept_rows(target):
    """The trainer zeroes the target of rows whose episode ended at the boundary; compare the others."""
    return (np.abs(target).sum(axis=1, keepdims=True) > 0).astype(target.dtype)


def test_undiscounted_gradient_matches_finite_differences():
    tr, stream = _setup(mode="bptt", warm=2)
    windows = [_window(stream, 3) for _ in range(2)]
    h, c = (a.copy() for a in tr.state)
    g = future_gradient(tr, (h, c), windows)
    B, H = h.shape

    def loss(h, c):
        total = 0.0
        state = (h, c)
        for x, loss_grad, ends in windows:
            logits, state = tr.forward_logits(x, state, episode_end=ends)
            total += float(loss_grad(logits)[0])
        return total

    eps, fd = 1e-6, np.zeros((B, 2 * H))
    for b in range(B):
        for i in range(2 * H):
            for sign in (1, -1):
                hh, cc = h.copy(), c.copy()
                (hh if i < H else cc)[b, i % H] += sign * eps
                fd[b, i] += sign * loss(hh, cc) / (2 * eps)
    np.testing.assert_allclose(g, B * fd, rtol=1e-6, atol=1e-9)


def test_a_perfect_sg_has_cosine_one_and_it_changes_nothing():
    tr, stream = _setup()
    windows = [_window(stream, 3)]
    before = {k: v.copy() for k, v in tr.core_params.items()}
    state = tuple(a.copy() for a in tr.state)
    g = future_gradient(tr, tr.state, windows, discount=0.1, tail=True)
    assert compare(g, g) == pytest.approx((1.0, 1.0))
    assert compare(-g, 2 * g) == pytest.approx((-1.0, 0.5))
    assert all(np.array_equal(before[k], v) for k, v in tr.core_params.items())
    assert all(np.array_equal(a, b) for a, b in zip(state, tr.state))


def test_aux_in_target_keeps_the_aux_share_and_differs():
    """The old behaviour, kept for comparison: the aux loss's gradient enters M's target."""
    task_only, target = _target_of_next_window(*_setup("dni-aux"), aux_in_target=True)
    assert np.abs((target - task_only) * _kept_rows(target)).max() > 1e-6


def test_first_output_backward_is_the_full_backward_with_one_gradient():
    from minidni.functional import lstm_backward, lstm_first_output_backward, lstm_forward

    rng = np.random.default_rng(3)
    T, N, D, H = 4, 5, 3, 6
    x, h0, c0 = rng.normal(size=(T, N, D)), rng.normal(size=(N, H)), rng.normal(size=(N, H))
    Wx, Wh, b = rng.normal(size=(D, 4 * H)), rng.normal(size=(H, 4 * H)), rng.normal(size=4 * H)
    keep = np.ones((T, N))
    keep[0, 1] = 0.0  # a row reset before the first step
    keep[2, 3] = 0.0
    hs, cT, cache = lstm_forward(x, h0, c0, Wx, Wh, b, keep=keep)
    dh1 = rng.normal(size=(N, H))
    dhs = np.zeros((T, N, H))
    dhs[0] = dh1
    _, dh0, dc0, *_ = lstm_backward(dhs, None, cache)
    dh0, dc0 = dh0.copy(), dc0.copy()
    one_h, one_c = lstm_first_output_backward(dh1, cache)
    np.testing.assert_allclose(one_h, dh0, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(one_c, dc0, rtol=1e-12, atol=1e-14)
    assert not one_h[1].any() and one_h[0].any()
