"""Recurrent SG targets (bootstrap, nstep, lambda): the λ-return and its endpoints in float64, an oracle SG,
episode resets, the online ring, checkpoints and the command line."""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest

from minidni.dni.future import future_gradient, lambda_return
from minidni.dni.recurrent import RecurrentTrainer, copy_loss
from minidni.tasks import CopyTaskStream, Curriculum
from minidni.tasks.copy import IN_CHANNELS, OUT_CHANNELS

T, B, H = 3, 3, 5
GAMMA = 0.5  # sg_scale: the discount per window, large enough that far windows count


def _trainer(seed=0, mode="dni", reset="episode", **kw):
    """A float64 trainer with a nonzero M, so that every term of a target is there."""
    rng = np.random.default_rng(seed)
    tr = RecurrentTrainer(IN_CHANNELS, OUT_CHANNELS, H, mode=mode, lr=3e-2, sg_lr=3e-2, sg_scale=GAMMA, reset=reset,
                          rng=rng, dtype=np.float64, **kw)
    tr.sg.params["W"][...] = rng.normal(0, 0.3, tr.sg.params["W"].shape)
    tr.sg.params["b"][...] = rng.normal(0, 0.1, tr.sg.params["b"].shape)
    return tr


def _stream(seed=0, start_length=2):
    """Copy episodes of start_length + 3 steps, so that episodes end inside and between windows."""
    return CopyTaskStream(Curriculum("copy", start_length=start_length), B, rng=np.random.default_rng([seed, 1]))


def _window(stream):
    w = stream.next_window(T)
    x, target, mask = (a.astype(np.float64) for a in (w.x, w.target, w.mask))
    return x, partial(copy_loss, target=target, mask=mask), w.episode_end


def _warm(tr, stream, windows=3):
    for _ in range(windows):
        tr.train_window(*_window(stream))
    return tr


def _carried(tr):
    return tuple(a.copy() for a in tr.state)


def _explicit(tr, state, windows, lam):
    """Σ_{n<K} (1-λ) λ^(n-1) G_n + λ^(K-1) G_K, each G_n by its own BPTT pass (future_gradient with the tail)."""
    K = len(windows)
    G = [future_gradient(tr, state, windows[:n], discount=tr.sg_scale, tail=True) for n in range(1, K + 1)]
    return sum((1 - lam) * lam ** (n - 1) * G[n - 1] for n in range(1, K)) + lam ** (K - 1) * G[K - 1]


@pytest.mark.parametrize("reset", ["episode", "never"])
@pytest.mark.parametrize("lam", [0.3, 0.8])
def test_single_pass_lambda_return_equals_the_explicit_mixture(reset, lam):
    tr = _warm(_trainer(reset=reset), stream := _stream())
    windows = [_window(stream) for _ in range(4)]
    assert any(w[2][:-1].any() for w in windows) and any(w[2][-1].any() for w in windows)  # resets inside, at ends
    expected = _explicit(tr, _carried(tr), windows, lam)
    got = lambda_return(tr, _carried(tr), windows, lam=lam, discount=tr.sg_scale)
    assert np.abs(expected).max() > 1e-3
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-13)


def test_endpoints_are_the_bootstrapped_and_the_n_step_targets():
    tr = _warm(_trainer(), stream := _stream())
    windows = [_window(stream) for _ in range(3)]
    state = _carried(tr)
    one = future_gradient(tr, state, windows[:1], discount=GAMMA, tail=True)
    three = future_gradient(tr, state, windows, discount=GAMMA, tail=True)
    close = partial(np.testing.assert_allclose, rtol=1e-11, atol=1e-14)
    close(lambda_return(tr, state, windows, lam=0.0, discount=GAMMA), one)  # λ = 0: bootstrap
    close(lambda_return(tr, state, windows[:1], lam=0.6, discount=GAMMA), one)  # K = 1: bootstrap
    close(lambda_return(tr, state, windows, lam=1.0, discount=GAMMA), three)  # λ = 1: the 3-step target
    assert np.abs(three - one).max() > 1e-3  # (the far windows do count here)


def test_one_step_target_is_the_target_the_trainer_regresses_on():
    tr = _warm(_trainer(), stream := _stream())
    nxt = _window(stream)
    expected = lambda_return(tr, _carried(tr), [nxt], lam=0.5, discount=GAMMA)
    seen = []
    original = tr._regress
    tr._regress = lambda xp, boundary, target, B, row: seen.append(target.copy()) or original(xp, boundary, target,
                                                                                              B, row)
    tr.train_window(*nxt)
    assert tr.ring is None and np.abs(expected).max() > 1e-3
    np.testing.assert_allclose(seen[0], expected, rtol=1e-12, atol=1e-14)


def _oracle(tr, windows):
    """M's stand-in: at boundary j, the true discounted gradient of every later window of this finite stream."""
    def predict(j, s):
        if j == len(windows):
            return np.zeros_like(s)
        carry = (~windows[j - 1][2][-1])[:, None].astype(s.dtype) if tr.reset == "episode" else 1.0
        state = (s[:, :H] * carry, s[:, H:] * carry)  # the state the next window starts from
        return future_gradient(tr, state, windows[j:], discount=GAMMA)
    return predict


@pytest.mark.parametrize("reset, length", [("never", 2), ("episode", 8)])
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_with_an_oracle_sg_every_n_step_target_is_the_true_gradient(n, reset, length):
    """Over a stream of 5 windows, the truth is its whole discounted gradient; every target equals it.

    Credit must reach far: no resets, or episodes of length + 3 = 11 steps (about 4 windows).
    """
    tr = _warm(_trainer(reset=reset), stream := _stream(start_length=length))
    windows = [_window(stream) for _ in range(5)]
    state, oracle = _carried(tr), _oracle(tr, windows)
    truth = future_gradient(tr, state, windows, discount=GAMMA)
    close = partial(np.testing.assert_allclose, rtol=1e-10, atol=1e-13)
    close(lambda_return(tr, state, windows[:n], lam=1.0, discount=GAMMA, predict=oracle), truth)
    close(lambda_return(tr, state, windows[:n], lam=0.4, discount=GAMMA, predict=oracle), truth)
    with_m = lambda_return(tr, state, windows[:n], lam=1.0, discount=GAMMA)
    assert np.abs(with_m - truth).max() > 1e-4  # (with the trainer's own M it is not the truth)


def test_no_credit_crosses_an_episode_end():
    """Every row's episode ends with the first window: the target is that window's own loss gradient."""
    tr = _warm(_trainer(), stream := _stream())
    windows = [_window(stream) for _ in range(3)]
    windows[0][2][-1] = True
    state = _carried(tr)
    own = future_gradient(tr, state, windows[:1])
    for lam in (0.0, 0.5, 1.0):
        np.testing.assert_allclose(lambda_return(tr, state, windows, lam=lam, discount=GAMMA), own, rtol=1e-12,
                                   atol=1e-14)


def _params(tr):
    return {**{k: v.copy() for k, v in tr.core_params.items()}, **{f"sg.{k}": v.copy() for k, v in tr.sg.params.items()}}


@pytest.mark.parametrize("kw", [{"sg_target": "nstep", "sg_horizon": 1},
                                {"sg_target": "lambda", "sg_horizon": 3, "sg_lambda": 0.0},
                                {"sg_target": "lambda", "sg_horizon": 1, "sg_lambda": 0.7}])
def test_targets_that_reduce_to_bootstrap_train_exactly_as_bootstrap(kw):
    a, b = _trainer(), _trainer(**kw)
    assert b.ring is None  # they take the bootstrap path itself
    sa, sb = _stream(), _stream()
    for _ in range(6):
        a.train_window(*_window(sa))
        b.train_window(*_window(sb))
    for k, v in _params(a).items():
        np.testing.assert_array_equal(_params(b)[k], v, err_msg=k)


@pytest.mark.parametrize("kw", [{"sg_target": "nstep", "sg_horizon": 3},
                                {"sg_target": "lambda", "sg_horizon": 2, "sg_lambda": 0.6}])
def test_the_ring_fits_each_boundary_on_its_return_once_k_windows_follow_it(kw):
    tr, stream = _trainer(**kw), _stream()
    K, lam = kw["sg_horizon"], kw.get("sg_lambda", 1.0)
    seen = []
    original = tr._regress
    tr._regress = lambda xp, boundary, target, B, row: seen.append((boundary[0], target.copy())) or original(
        xp, boundary, target, B, row)
    for k in range(8):
        window = _window(stream)
        expected = None
        if len(tr.ring.windows) == K - 1 and tr.ring.boundaries:  # the target due in this window, by hand
            s, _, keep = tr.ring.boundaries[0]
            state = (s[:, :H] * keep, s[:, H:] * keep)
            expected = s, lambda_return(tr, state, [*tr.ring.windows, window], lam=lam, discount=GAMMA)
        count = len(seen)
        tr.train_window(*window)
        assert len(seen) == count + (expected is not None)
        if expected is not None:
            assert seen[-1][0] is expected[0]
            np.testing.assert_allclose(seen[-1][1], expected[1], rtol=1e-12, atol=1e-14)
    assert len(seen) == 8 - K  # the first boundary follows window 1
    d = tr.collect_diagnostics()
    assert d["windows"] == 8 and np.isfinite(d["sg_cosine"])


def test_reset_state_drops_the_ring():
    tr = _warm(_trainer(sg_target="nstep", sg_horizon=3), _stream())
    assert tr.ring.boundaries and tr.ring.windows
    tr.reset_state()
    assert not tr.ring.boundaries and not tr.ring.windows and tr.pending is None


def test_checkpoint_keeps_the_ring_and_continues_identically():
    kw = dict(sg_target="lambda", sg_horizon=3, sg_lambda=0.5, mode="dni-aux")
    a, b = _trainer(**kw), _trainer(seed=1, **kw)
    sa = _stream()
    _warm(a, sa, windows=4)
    arrays, meta = a.state_dict()
    b.load_state_dict(arrays, json.loads(json.dumps(meta)))
    sb = _stream()
    sb.load_state_dict(sa.state_dict())
    assert len(b.ring.boundaries) == 3 and len(b.ring.windows) == 2 and b.pending is b.ring.boundaries[-1]
    for _ in range(4):
        la, lb = a.train_window(*_window(sa)), b.train_window(*_window(sb))
        assert float(la) == float(lb)
    for k, v in _params(a).items():
        np.testing.assert_array_equal(_params(b)[k], v, err_msg=k)


def test_a_ring_with_an_unreplayable_loss_cannot_be_checkpointed():
    tr, stream = _trainer(sg_target="nstep", sg_horizon=2), _stream()
    for _ in range(2):
        x, loss, ends = _window(stream)
        tr.train_window(x, lambda logits: loss(logits), episode_end=ends)
    with pytest.raises(ValueError, match="cannot checkpoint the target ring"):
        tr.state_dict()


@pytest.mark.parametrize("kw, message", [
    ({"mode": "bptt", "sg_target": "nstep"}, "needs mode dni or dni-aux"),
    ({"sg_target": "nstep", "aux_in_target": True, "mode": "dni-aux"}, "without aux_in_target"),
    ({"sg_target": "nstep", "sg_horizon": 0}, "sg_horizon must be an integer >= 1"),
    ({"sg_target": "lambda", "sg_lambda": 1.5}, r"sg_lambda must be in \[0, 1\]"),
    ({"sg_target": "td"}, "sg_target='td' is not one of"),
])
def test_bad_arguments_are_clear_errors(kw, message):
    with pytest.raises(ValueError, match=message):
        RecurrentTrainer(IN_CHANNELS, OUT_CHANNELS, H, rng=np.random.default_rng(0), **kw)


# -- command line ------------------------------------------------------------------------------------
def _cli(out, *extra, steps=24):
    from minidni.experiments.recurrent import main_copy
    return main_copy(["--steps", str(steps), "--hidden", "8", "--batch", "4", "--T", "3", "--log-every", "8",
                      "--checkpoint-every", "12", "--no-progress", "--no-compare", "--out", str(out), *extra])


@pytest.mark.parametrize("target", [["--sg-target", "nstep", "--sg-horizon", "2"],
                                    ["--sg-target", "lambda", "--sg-horizon", "3", "--sg-lambda", "0.5"]])
def test_resume_with_a_ring_gives_the_uninterrupted_result(tmp_path, target):
    from minidni.io import load_checkpoint
    full, part = tmp_path / "full", tmp_path / "part"
    assert _cli(full, *target, "--sg-truth-windows", "2") == 0
    assert _cli(part, *target, "--sg-truth-windows", "2", steps=12) == 0
    assert _cli(part, *target, "--sg-truth-windows", "2", "--resume") == 0
    (a, meta_a), (b, meta_b) = load_checkpoint(full / "checkpoint.npz"), load_checkpoint(part / "checkpoint.npz")
    assert a.keys() == b.keys() and any(k.startswith("ring.w") for k in a)
    assert meta_a["trainer"] == meta_b["trainer"] and meta_a["stream"] == meta_b["stream"]
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    s = json.loads((full / "summary.json").read_text())
    assert s["options"]["sg_target"] == target[1] and s["diagnostics"]["mean_sg_true_cosine"] is not None


@pytest.mark.parametrize("bad, expect", [
    (["--mode", "bptt", "--sg-target", "nstep"], "--sg-target nstep needs --mode dni or dni-aux"),
    (["--sg-horizon", "2"], "--sg-horizon needs --sg-target nstep or lambda"),
    (["--sg-target", "nstep", "--sg-lambda", "0.5"], "--sg-lambda 0.5 needs --sg-target lambda"),
    (["--sg-target", "lambda", "--mode", "dni-aux", "--aux-in-target"], "--aux-in-target needs --sg-target bootstrap"),
    (["--sg-target", "lambda", "--sg-lambda", "1.5"], "1.5 is out of range (accepted: a finite number >= 0 and <= 1)"),
    (["--sg-target", "nstep", "--sg-horizon", "0"], "0 is out of range (accepted: an integer from 1 to"),
])
def test_bad_target_options_are_one_line_errors(tmp_path, capsys, bad, expect):
    assert _cli(tmp_path / "o", *bad) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expect in err and not (tmp_path / "o").exists()


def test_ptb_with_a_lambda_target_resumes_across_a_new_pass(tmp_path):
    """PTB: the char loss's integer labels travel in the checkpoint; a new pass (state reset) drops the ring."""
    from collections import namedtuple

    from minidni.experiments.recurrent import make_parser, run
    from minidni.io import load_checkpoint

    PTB = namedtuple("PTB", "vocab train valid test")
    rng = np.random.default_rng(0)
    data = PTB(tuple("abcde"), rng.integers(0, 5, 201), rng.integers(0, 5, 40), rng.integers(0, 5, 40))

    def train(out, steps, *extra):
        args = make_parser("ptb").parse_args(["--steps", str(steps), "--hidden", "8", "--batch", "4", "--T", "4",
                                              "--eval-every", "10", "--log-every", "5", "--checkpoint-every", "10",
                                              "--sg-target", "lambda", "--sg-horizon", "3", "--no-progress",
                                              "--out", str(out), *extra])
        return run(args, "ptb", data)[0]

    full = train(tmp_path / "full", 30)  # 12 windows per pass: two new passes
    train(tmp_path / "part", 20)
    part = train(tmp_path / "part", 30, "--resume")
    assert np.isfinite(full["test_bpc"]) and full["test_bpc"] == part["test_bpc"]
    a, _ = load_checkpoint(tmp_path / "full" / "checkpoint.npz")
    b, _ = load_checkpoint(tmp_path / "part" / "checkpoint.npz")
    assert a.keys() == b.keys() and a["ring.w0.loss.labels"].dtype.kind == "i"
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_runs_recorded_before_the_target_options_existed_still_resume_and_are_reused(tmp_path):
    from minidni.experiments.grid import finished_summary, parse_cell_options
    from minidni.experiments.recurrent import make_parser
    from minidni.io import load_checkpoint

    out = tmp_path / "old"
    assert _cli(out, steps=12) == 0
    _, meta = load_checkpoint(out / "checkpoint.npz")
    assert not {"sg_target", "sg_horizon", "sg_lambda"} & set(meta["options"])  # at their defaults: not recorded
    assert _cli(out, "--resume") == 0
    summary = json.loads((out / "summary.json").read_text())
    for k in ("sg_target", "sg_horizon", "sg_lambda"):  # as a summary written before these options existed
        del summary["options"][k]
    (out / "summary.json").write_text(json.dumps(summary))
    argv = ["--steps", "24", "--hidden", "8", "--batch", "4", "--T", "3", "--log-every", "8", "--checkpoint-every",
            "12", "--no-progress", "--no-compare", "--out", str(out)]
    _, options = parse_cell_options(make_parser("copy"), argv, "copy", ("resume", "progress", "out"))
    assert finished_summary(out, options, 24) is not None
    _, lam = parse_cell_options(make_parser("copy"), [*argv, "--sg-target", "lambda"], "copy", ("resume", "out"))
    assert finished_summary(out, lam, 24) is None  # another target: not the same run


# -- CuPy (a GPU, else the strict stand-in: no host array in a device op, every host sync recorded) ----------
def _untimed(logs):
    return [{k: v for k, v in e.items() if "second" not in k} for e in logs]


@pytest.mark.cupy
def test_lambda_target_on_cupy_matches_numpy_without_syncs_between_logs(cupy, tmp_path, monkeypatch):
    import strict_cupy

    target = ["--sg-target", "lambda", "--sg-horizon", "2", "--sg-truth-windows", "2"]
    standin = cupy is strict_cupy.module
    if standin:  # stamp each host sync with the windows trained so far
        original = RecurrentTrainer.train_window

        def counted(self, *args, **kwargs):
            result = original(self, *args, **kwargs)
            strict_cupy.SYNCS.step = self.step
            return result
        monkeypatch.setattr(RecurrentTrainer, "train_window", counted)
        strict_cupy.SYNCS.clear()
        strict_cupy.SYNCS.step = 0
    for name in ("cupy", "numpy"):
        assert _cli(tmp_path / name, *target, "--backend", name) == 0
    if standin:
        allowed = {0, 8, 12, 16, 24}  # logs every 8 windows, checkpoints every 12, the end
        events = strict_cupy.SYNCS.events
        assert any(e.step == 8 for e in events), "no sync at a log: the stamping is broken"
        bad = [e for e in events if e.step not in allowed]
        assert not bad, [(e.step, e.kind, e.site) for e in bad[:5]]
    got, ref = (json.loads((tmp_path / n / "summary.json").read_text()) for n in ("cupy", "numpy"))
    tol = dict(rtol=1e-4, atol=1e-5) if standin else dict(rtol=0.1, atol=0.05)
    for a, b in zip(_untimed(got["logs"]), _untimed(ref["logs"])):
        assert a.keys() == b.keys()
        for k in a:
            if isinstance(a[k], float):
                np.testing.assert_allclose(a[k], b[k], err_msg=k, **tol)
    assert _cli(tmp_path / "cupy", *target, "--backend", "cupy", "--resume", steps=36) == 0  # the ring reloads
