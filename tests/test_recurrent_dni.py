"""Recurrent DNI: the update equations checked exactly (float64) against a hand-built reference,
resets, the aux loss, checkpoints, divergence and the command line."""

import json
from collections import namedtuple

import numpy as np
import pytest

from minidni.dni.recurrent import RecurrentTrainer, char_loss, copy_loss
from minidni.functional import linear_backward, linear_forward, lstm_backward, lstm_forward
from minidni.gradcheck import adjoint_check

D, C, H, B, T = 3, 4, 5, 2, 3


def _trainer(mode="dni", **kw):
    opts = dict(mode=mode, lr=1.0, sg_lr=0.5, sg_scale=1.0, clip=0.0, reset="never", optimizer="sgd",
                rng=np.random.default_rng(7), dtype=np.float64)
    opts.update(kw)
    return RecurrentTrainer(D, C, H, **opts)


def _params(tr):
    return {k: v.copy() for k, v in tr.core_params.items()}


def _window_data(seed, steps=T):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((steps, B, D))
    target = (rng.random((steps, B, C)) < 0.5).astype(np.float64)
    mask = np.ones((steps, B))
    return x, target, mask


def _loss(target, mask):
    return lambda logits: copy_loss(logits, target, mask)


def _ref_window(p, x, h0, c0, target, mask, dhT=None, dcT=None):
    """The window by hand from functional ops: returns (hs, cT, grads of every core param, dh0, dc0)."""
    hs, cT, cache = lstm_forward(x, h0, c0, p["lstm.Wx"], p["lstm.Wh"], p["lstm.b"])
    steps = x.shape[0]
    logits, lcache = linear_forward(hs.reshape(steps * B, H), p["head.W"], p["head.b"])
    _, dlogits, _ = copy_loss(logits.reshape(steps, B, C), target, mask)
    dflat, dW, db = linear_backward(dlogits.reshape(steps * B, C), lcache)
    dhs = dflat.reshape(steps, B, H)
    if dhT is not None:
        dhs[-1] += dhT
    _, dh0, dc0, dWx, dWh, dbl = lstm_backward(dhs, dcT, cache)
    grads = {"lstm.Wx": dWx, "lstm.Wh": dWh, "lstm.b": dbl, "head.W": dW, "head.b": db}
    return hs.copy(), cT.copy(), grads, dh0, dc0


def _zero_state():
    return np.zeros((B, H)), np.zeros((B, H))


def test_oracle_sg_gives_full_bptt_over_two_windows():
    """With M returning the true gradient of the next window's loss (scale 1), window 1's DNI update
    plus window 2's own gradient equals full BPTT over both windows (float64, 1e-12)."""
    (x1, t1, m1), (x2, t2, m2) = _window_data(1), _window_data(2)
    dni = _trainer("dni")
    theta0 = _params(dni)
    hs1, c1, _, _, _ = _ref_window(theta0, x1, *_zero_state(), t1, m1)
    _, _, g2, dh1, dc1 = _ref_window(theta0, x2, hs1[-1], c1, t2, m2)  # window 2 from s_1, no future
    dni.predict_sg = lambda s: np.concatenate([dh1, dc1], axis=1) * B  # the oracle, per-example units
    dni.train_window(x1, _loss(t1, m1))
    full = _trainer("bptt")
    full.train_window(np.concatenate([x1, x2]), _loss(np.concatenate([t1, t2]), np.concatenate([m1, m2])))
    for k in theta0:  # SGD with lr 1: update = -gradient
        g_dni = theta0[k] - dni.core_params[k]
        g_full = theta0[k] - full.core_params[k]
        np.testing.assert_allclose(g_dni + g2[k], g_full, rtol=1e-12, atol=1e-12, err_msg=k)
    # and without the oracle (zero SG) window 1 alone is NOT full BPTT: the test can fail
    bptt = _trainer("bptt")
    bptt.train_window(x1, _loss(t1, m1))
    g_bptt = theta0["lstm.Wh"] - bptt.core_params["lstm.Wh"]
    assert not np.allclose(g_bptt + g2["lstm.Wh"], theta0["lstm.Wh"] - full.core_params["lstm.Wh"], atol=1e-6)


def test_dni_with_scale_zero_equals_bptt():
    dni, bptt = _trainer("dni", sg_scale=0.0, optimizer="adam", lr=1e-2), _trainer("bptt", optimizer="adam", lr=1e-2)
    for seed in range(4):
        x, t, m = _window_data(seed)
        dni.train_window(x, _loss(t, m))
        bptt.train_window(x, _loss(t, m))
    assert np.any(dni.sg.params["W"] != 0)  # M did learn, its output was just not used
    for k, v in bptt.core_params.items():
        np.testing.assert_allclose(dni.core_params[k], v, rtol=1e-14, atol=1e-15, err_msg=k)


def test_state_is_carried_across_windows():
    (x1, t1, m1), (x2, t2, m2) = _window_data(3), _window_data(4)
    tr = _trainer("bptt")
    theta0 = _params(tr)
    tr.train_window(x1, _loss(t1, m1))
    hs1, c1, *_ = _ref_window(theta0, x1, *_zero_state(), t1, m1)
    np.testing.assert_allclose(tr.state[0], hs1[-1], rtol=1e-13)
    np.testing.assert_allclose(tr.state[1], c1, rtol=1e-13)
    theta1 = _params(tr)
    loss = tr.train_window(x2, _loss(t2, m2))
    carried = copy_loss(_ref_logits(theta1, x2, hs1[-1], c1), t2, m2)[0]
    fresh = copy_loss(_ref_logits(theta1, x2, *_zero_state()), t2, m2)[0]
    np.testing.assert_allclose(loss, carried, rtol=1e-13)
    assert abs(float(loss) - float(fresh)) > 1e-6  # a reset between the windows would fail here


def _ref_logits(p, x, h0, c0):
    hs, _, _ = lstm_forward(x, h0, c0, p["lstm.Wx"], p["lstm.Wh"], p["lstm.b"])
    return (hs.reshape(-1, H) @ p["head.W"] + p["head.b"]).reshape(x.shape[0], B, C)


def test_bootstrapped_target_and_sg_update_follow_the_equations():
    """Window 2's backward delivers dL2/ds_1 + scale * M(s_2) ds_2/ds_1 (times B): M's SGD step on it."""
    scale, sg_lr = 0.3, 0.5
    (x1, t1, m1), (x2, t2, m2) = _window_data(5), _window_data(6)
    tr = _trainer("dni", sg_scale=scale, sg_lr=sg_lr)
    rng = np.random.default_rng(0)
    tr.sg.params["W"][...] = 0.3 * rng.standard_normal((2 * H, 2 * H))
    tr.sg.params["b"][...] = 0.1 * rng.standard_normal(2 * H)
    W0, b0 = tr.sg.params["W"].copy(), tr.sg.params["b"].copy()
    theta0 = _params(tr)
    hs1, c1, *_ = _ref_window(theta0, x1, *_zero_state(), t1, m1)
    tr.train_window(x1, _loss(t1, m1))
    np.testing.assert_array_equal(tr.sg.params["W"], W0)  # nothing to regress on yet
    theta1 = _params(tr)
    s1 = np.concatenate([hs1[-1], c1], axis=1)
    hs2, c2, *_ = _ref_window(theta1, x2, hs1[-1], c1, t2, m2)
    p2 = np.concatenate([hs2[-1], c2], axis=1) @ W0 + b0  # M(s_2), per example
    delta2 = scale * p2 / B
    _, _, _, dh1, dc1 = _ref_window(theta1, x2, hs1[-1], c1, t2, m2, delta2[:, :H], delta2[:, H:])
    target = B * np.concatenate([dh1, dc1], axis=1)
    err = (s1 @ W0 + b0) - target  # 0.5 |M(s_1) - target|^2 / B, per example
    tr.train_window(x2, _loss(t2, m2))
    np.testing.assert_allclose(tr.sg.params["W"], W0 - sg_lr * s1.T @ err / B, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(tr.sg.params["b"], b0 - sg_lr * err.sum(0) / B, rtol=1e-12, atol=1e-13)


def _episode_end(rows_steps, steps=T):
    ends = np.zeros((steps, B), bool)
    for t, b in rows_steps:
        ends[t, b] = True
    return ends


def test_reset_at_window_end_zeroes_state_sg_and_target():
    (x1, t1, m1), (x2, t2, m2) = _window_data(8), _window_data(9)
    tr = _trainer("dni", reset="episode")
    tr.sg.params["b"][...] = 1.0  # M outputs a constant nonzero SG
    ref = _trainer("bptt", reset="episode")
    ends = _episode_end([(T - 1, 0)])  # row 0's episode ends at the window's last step
    tr.train_window(x1, _loss(t1, m1), episode_end=ends)
    ref.train_window(x1, _loss(t1, m1), episode_end=ends)
    assert np.all(tr.state[0][0] == 0) and np.all(tr.state[1][0] == 0) and np.all(tr.state[0][1] != 0)
    np.testing.assert_array_equal(tr.pending[1][0], 0)  # no SG for the row that ended
    # row 1 did get the SG: the update differs from bptt's
    assert not np.allclose(tr.core_params["lstm.Wh"], ref.core_params["lstm.Wh"])
    # window 2: M regresses only on row 1 (row 0's state had no future)
    s1, W0, b0 = tr.pending[0].copy(), tr.sg.params["W"].copy(), tr.sg.params["b"].copy()
    theta1 = _params(tr)
    hs2, c2, *_ = _ref_window(theta1, x2, *tr.state, t2, m2)
    delta2 = (np.concatenate([hs2[-1], c2], axis=1) @ W0 + b0) / B  # scale 1
    _, _, _, dh1, dc1 = _ref_window(theta1, x2, *tr.state, t2, m2, delta2[:, :H], delta2[:, H:])
    err = (s1 @ W0 + b0) - B * np.concatenate([dh1, dc1], axis=1)
    err[0] = 0.0
    tr.train_window(x2, _loss(t2, m2), episode_end=np.zeros((T, B), bool))
    np.testing.assert_allclose(tr.sg.params["W"], W0 - 0.5 * s1.T @ err / B, rtol=1e-12, atol=1e-13)


def test_reset_inside_a_window_restarts_the_row():
    x, t, m = _window_data(10)
    tr = _trainer("bptt", reset="episode")
    theta0 = _params(tr)
    ends = _episode_end([(0, 1)])  # row 1's episode ends at step 0: steps 1.. start from zero
    out = {}

    def loss(logits):
        out["logits"] = logits
        return copy_loss(logits, t, m)

    tr.train_window(x, loss, episode_end=ends)
    fresh = _ref_logits(theta0, x[1:], *_zero_state())
    np.testing.assert_allclose(out["logits"][1:, 1], fresh[:, 1], rtol=1e-13)
    carried = _ref_logits(theta0, x, *_zero_state())
    np.testing.assert_allclose(out["logits"][:, 0], carried[:, 0], rtol=1e-13)
    assert not np.allclose(out["logits"][1:, 1], carried[1:, 1])  # never-reset would fail


def test_aux_loss_gradient_matches_finite_differences():
    """dni-aux with scale 0: the update is the gradient of task loss + lambda * aux loss."""
    lam = 0.7
    x, t, m = _window_data(11)
    tr = _trainer("dni-aux", sg_scale=0.0, aux_weight=lam)
    rng = np.random.default_rng(1)
    tr.sg.params["W"][...] = rng.standard_normal((2 * H, 2 * H))
    tr.aux.params["W"][...] = 0.3 * rng.standard_normal((H, 2 * H))
    W_sg, b_sg = tr.sg.params["W"].copy(), tr.sg.params["b"].copy()
    theta0 = _params(tr)
    names = list(theta0)

    def total_loss(*values):
        p = dict(zip(names, values))
        hs, cT, _ = lstm_forward(x, *_zero_state(), p["lstm.Wx"], p["lstm.Wh"], p["lstm.b"])
        logits = (hs.reshape(-1, H) @ p["head.W"] + p["head.b"]).reshape(T, B, C)
        task = copy_loss(logits, t, m)[0]
        sg_target = np.concatenate([hs[-1], cT], axis=1) @ W_sg + b_sg
        sg_target = _frozen["target"] if "target" in _frozen else sg_target  # held constant (no gradient)
        pred = hs[0] @ p["aux.W"] + p["aux.b"]
        return task + lam * ((pred - sg_target) ** 2).sum() / (2 * B)

    _frozen = {}
    hsT, cT, _ = lstm_forward(x, *_zero_state(), theta0["lstm.Wx"], theta0["lstm.Wh"], theta0["lstm.b"])
    _frozen["target"] = np.concatenate([hsT[-1], cT], axis=1) @ W_sg + b_sg
    tr.train_window(x, _loss(t, m))
    grads = [theta0[k] - tr.core_params[k] for k in names]
    adjoint_check(total_loss, [theta0[k] for k in names], grads, None, names=names)
    assert np.any(grads[names.index("aux.W")] != 0)


def test_checkpoint_round_trip_continues_identically():
    kw = dict(mode="dni-aux", optimizer="adam", lr=1e-2, sg_lr=1e-2, sg_scale=0.1, reset="episode")
    a, b = _trainer(**kw), _trainer(**kw)
    data = [_window_data(s) for s in range(6)]
    ends = [_episode_end([(1, s % B)]) for s in range(6)]
    for i in range(3):
        a.train_window(data[i][0], _loss(*data[i][1:]), episode_end=ends[i])
    arrays, meta = a.state_dict()
    b.load_state_dict(arrays, json.loads(json.dumps(meta)))
    for i in range(3, 6):
        la = a.train_window(data[i][0], _loss(*data[i][1:]), episode_end=ends[i])
        lb = b.train_window(data[i][0], _loss(*data[i][1:]), episode_end=ends[i])
        assert float(la) == float(lb)
    for k, v in a.core_params.items():
        np.testing.assert_array_equal(b.core_params[k], v)
    np.testing.assert_array_equal(a.sg.params["W"], b.sg.params["W"])


def test_char_loss_is_the_sum_over_steps_of_batch_means():
    rng = np.random.default_rng(0)
    logits, labels = rng.standard_normal((3, 2, 5)), rng.integers(0, 5, (3, 2))
    loss, d = char_loss(logits, labels)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    manual = -np.take_along_axis(logp, labels[..., None], -1).sum() / 2
    np.testing.assert_allclose(loss, manual, rtol=1e-12)
    assert d.shape == logits.shape


# -- the command line -----------------------------------------------------------------------


def _cli(main, tmp_path, *extra):
    return main(["--steps", "40", "--hidden", "8", "--batch", "4", "--T", "3", "--log-every", "10",
                 "--checkpoint-every", "20", "--no-progress", "--out", str(tmp_path), *extra])


def test_copy_command_writes_summary_and_figures(tmp_path, capsys):
    from minidni.experiments.recurrent import main_copy
    assert _cli(main_copy, tmp_path) == 0
    for mode in ("dni", "bptt"):
        s = json.loads((tmp_path / mode / "summary.json").read_text())
        assert s["steps"] == 40 and s["mode"] == mode and "max_episode_length" in s
        assert {"wall_seconds", "steps_per_second", "backend", "options"} <= s.keys()
    for name in ("copy_curriculum.png", "sg_diagnostics.png", "compare.json"):
        assert (tmp_path / name).exists()
    out = capsys.readouterr().out
    assert "solved Copy episodes up to length" in out


def test_resume_gives_the_uninterrupted_result(tmp_path):
    from minidni.experiments.recurrent import main_repeat_copy
    full, part = tmp_path / "full", tmp_path / "part"
    assert _cli(main_repeat_copy, full, "--no-compare", "--mode", "dni-aux") == 0
    assert main_repeat_copy(["--steps", "20", "--hidden", "8", "--batch", "4", "--T", "3", "--log-every", "10",
                             "--checkpoint-every", "20", "--no-progress", "--out", str(part), "--no-compare",
                             "--mode", "dni-aux"]) == 0
    assert _cli(main_repeat_copy, part, "--no-compare", "--mode", "dni-aux", "--resume") == 0
    from minidni.io import load_checkpoint
    (a, meta_a), (b, meta_b) = load_checkpoint(full / "checkpoint.npz"), load_checkpoint(part / "checkpoint.npz")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert {k: v for k, v in meta_a.items() if k not in ("train_seconds", "logs")} == \
        {k: v for k, v in meta_b.items() if k not in ("train_seconds", "logs")}
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (full, part))
    assert sa["logs"] == [dict(e, train_seconds=e2["train_seconds"]) for e, e2 in zip(sb["logs"], sa["logs"])]


def test_nan_stops_with_training_diverged(tmp_path, capsys):
    from minidni.experiments.recurrent import main_copy
    code = _cli(main_copy, tmp_path, "--no-compare", "--lr", "1e38", "--clip", "0")
    err = capsys.readouterr().err
    assert code == 2
    assert "error:" in err and "NaN or inf" in err and "at step 2" in err and "try" in err
    assert len(err.strip().splitlines()) == 1
    assert "NaN or inf" in json.loads((tmp_path / "summary.json").read_text())["diverged"]


@pytest.mark.parametrize("bad", [["--T", "0"], ["--mode", "sgd"], ["--reset-state", "sometimes"],
                                 ["--sg-scale", "-1"]])
def test_bad_options_are_one_line_errors(tmp_path, capsys, bad):
    from minidni.experiments.recurrent import main_copy
    assert main_copy(["--out", str(tmp_path), *bad]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "error" in err


def test_ptb_runs_on_a_tiny_corpus(tmp_path):
    from minidni.experiments.recurrent import make_parser, run
    PTB = namedtuple("PTB", "vocab train valid test")
    rng = np.random.default_rng(0)
    data = PTB(tuple("abcde"), rng.integers(0, 5, 400), rng.integers(0, 5, 60), rng.integers(0, 5, 60))
    args = make_parser("ptb").parse_args(["--steps", "12", "--hidden", "8", "--batch", "4", "--T", "4",
                                          "--eval-every", "6", "--log-every", "6", "--no-progress",
                                          "--out", str(tmp_path)])
    (s,) = run(args, "ptb", data)
    assert np.isfinite(s["test_bpc"]) and np.isfinite(s["valid_bpc"]) and s["steps"] == 12
    assert (tmp_path / "ptb_bpc.png").exists()
