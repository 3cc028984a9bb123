"""The two-clock system: the odd-digit stream's labels, the trainer's gradients (finite differences,
DNI with a true-gradient SG equals the locked system), the zero-initialised SG, checkpoints and the
command line."""

import json
import subprocess
import sys

import numpy as np
import pytest

from minidni.backend import get_xp
from minidni.dni.multinet import MODES, TwoClockTrainer
from minidni.experiments.multinet import chance_accuracy, main
from minidni.functional.losses import softmax_cross_entropy
from minidni.gradcheck import adjoint_check
from minidni.io import load_checkpoint, save_checkpoint
from minidni.tasks.odd_digits import OddDigitStream, odd_counts

D, B, T = 5, 4, 3
SIZES = dict(embed=6, fast_hidden=5, slow_hidden=4, message=3)


def _pool(n=50, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, D)), rng.integers(0, 10, n)


def _stream(seed=1, batch=B, T_=T):
    images, labels = _pool()
    return OddDigitStream(images, labels, batch, T_, rng=np.random.default_rng(seed))


def _trainer(mode, **kw):
    opts = dict(mode=mode, lr=0.1, clip=0.0, optimizer="sgd", rng=np.random.default_rng(3), dtype=np.float64, **SIZES)
    opts.update(kw)
    return TwoClockTrainer(D, T, **opts)


# -- the stream --------------------------------------------------------------------------------
def test_odd_counts_by_hand():
    digits = np.array([[1, 2], [3, 4], [5, 7], [0, 9]])  # (L=4, B=2)
    np.testing.assert_array_equal(odd_counts(digits, 2), [[2, 0], [1, 2]])
    np.testing.assert_array_equal(odd_counts(digits, 4), [[3, 2]])
    with pytest.raises(ValueError, match="multiple of T=3"):
        odd_counts(digits, 3)


def test_stream_labels_count_the_odd_digits_each_network_saw():
    images = np.arange(40, dtype=np.float32)[:, None]  # image i is the number i: x tells which image was shown
    labels = np.random.default_rng(0).integers(0, 10, 40)
    stream = OddDigitStream(images, labels, 6, 4, rng=np.random.default_rng(2))
    for _ in range(3):
        p = stream.next_period()
        assert p.x.shape == (16, 6, 1) and p.fast_y.shape == (4, 6) and p.slow_y.shape == (6,)
        shown = labels[p.x[..., 0].astype(int)]
        np.testing.assert_array_equal(p.digits, shown)
        for b in range(6):
            for k in range(4):  # A: odd digits among steps 4k .. 4k+3
                assert p.fast_y[k, b] == sum(int(d) % 2 for d in shown[4 * k:4 * k + 4, b])
            assert p.slow_y[b] == sum(int(d) % 2 for d in shown[:, b])  # B: the whole period
        assert p.fast_y.min() >= 0 and p.fast_y.max() <= 4 and p.slow_y.max() <= 16
    assert stream.periods == 3


def test_stream_is_seeded_and_resumes_exactly():
    a, b = _stream(5), _stream(5)
    a.next_period()
    state = json.loads(json.dumps(a.state_dict()))  # plain JSON values
    b.load_state_dict(state)
    pa, pb = a.next_period(), b.next_period()
    np.testing.assert_array_equal(pa.x, pb.x)
    np.testing.assert_array_equal(pa.digits, pb.digits)
    assert not np.array_equal(_stream(6).next_period().digits, _stream(5).next_period().digits)
    with pytest.raises(ValueError, match="batch_size"):
        _stream(5, batch=B + 1).load_state_dict(state)


def test_chance_accuracy_is_the_binomial_mode():
    assert chance_accuracy(np.array([1, 2]), 4) == pytest.approx(100 * 6 / 16)  # P(2 of 4), p = 1/2
    assert chance_accuracy(np.array([1, 3, 5, 2]), 1) == pytest.approx(75.0)


# -- the gradients -----------------------------------------------------------------------------
def _period_loss(tr, period):
    """Locked joint loss sum_k L_A,k + L_B of one period and its analytic gradients."""
    x = period.x.astype(np.float64)
    logits, msgs, fcache = tr.fast_forward(x)
    fast_loss, dlogits = tr.fast_loss(logits, period.fast_y)
    slow_logits, scache = tr.slow_forward(msgs)
    slow_loss, dslow = softmax_cross_entropy(slow_logits, period.slow_y)
    dmsgs, slow_grads = tr.slow_backward(dslow, scache)
    return fast_loss + slow_loss, tr.fast_backward(dlogits, dmsgs, fcache), slow_grads, dmsgs


def test_locked_gradients_match_finite_differences():
    tr, period = _trainer("locked"), _stream().next_period()
    params = {**{f"fast.{k}": v for k, v in tr.fast_params.items()}, **{f"slow.{k}": v for k, v in tr.slow_params.items()}}
    _, fast_grads, slow_grads, _ = _period_loss(tr, period)
    grads = {**{f"fast.{k}": v for k, v in fast_grads.items()}, **{f"slow.{k}": v for k, v in slow_grads.items()}}
    names = list(params)
    assert all(np.abs(grads[n]).max() > 0 for n in names)  # every parameter takes part

    def loss(*values):
        saved = [params[n].copy() for n in names]
        for n, v in zip(names, values):
            params[n][...] = v
        try:
            return _period_loss(tr, period)[0]
        finally:
            for n, v in zip(names, saved):
                params[n][...] = v

    adjoint_check(loss, [params[n].copy() for n in names], [grads[n] for n in names], None, names=names)


class _Recorder:
    """Stands in for an optimiser: records each update's gradients and changes nothing."""

    def __init__(self):
        self.steps = []

    def step(self, grads):
        self.steps.append({k: v.copy() for k, v in grads.items()})


class _TrueGradientSG:
    """An oracle SG: B's true gradient at message k, from a look-ahead over the whole period (tests only)."""

    def __init__(self, tr, period):
        _, _, _, self.dmsgs = _period_loss(tr, period)
        self.msgs = tr.fast_forward(period.x.astype(np.float64))[1]
        self.calls, self.fast_y = 0, period.fast_y
        self.targets = []

    def predict(self, m, code):
        k = self.calls  # A's windows come in order
        self.calls += 1
        np.testing.assert_array_equal(code, k * (T + 1) + self.fast_y[k])  # conditioned on the tick and A's label
        np.testing.assert_allclose(m, self.msgs[k], rtol=1e-12, atol=1e-15)  # A sends what the look-ahead saw
        return self.dmsgs[k], k

    def fit(self, k, target):
        self.targets.append((k, target))


def test_dni_with_the_true_gradient_equals_locked():
    """At the same parameters, A's T per-window DNI updates sum to the locked update, and B's agree (float64)."""
    period = _stream().next_period()
    runs = {}
    for mode in ("locked", "dni"):
        tr = _trainer(mode)
        tr.fast_opt, tr.slow_opt = _Recorder(), _Recorder()
        if mode == "dni":
            tr.sg = oracle = _TrueGradientSG(tr, period)
        tr.train_period(period)
        runs[mode] = tr
    locked, dni = runs["locked"], runs["dni"]
    assert (len(locked.fast_opt.steps), len(dni.fast_opt.steps)) == (1, T)  # the lock costs A a factor T in updates
    assert (locked.fast_updates, dni.fast_updates, locked.slow_updates, dni.slow_updates) == (1, T, 1, 1)
    for k, g in locked.fast_opt.steps[0].items():
        np.testing.assert_allclose(sum(step[k] for step in dni.fast_opt.steps), g, rtol=1e-12, atol=1e-15, err_msg=k)
    for k, g in locked.slow_opt.steps[0].items():
        np.testing.assert_allclose(dni.slow_opt.steps[0][k], g, rtol=1e-12, atol=1e-15, err_msg=k)
    assert [k for k, _ in oracle.targets] == list(range(T))  # the SG is fitted on B's true gradient at each tick
    for k, target in oracle.targets:
        np.testing.assert_allclose(target, oracle.dmsgs[k], rtol=1e-12, atol=1e-15)
    # without the SG ("none") A's updates miss B's gradient: the test above is not vacuous
    none = _trainer("none")
    none.fast_opt, none.slow_opt = _Recorder(), _Recorder()
    none.train_period(period)
    total = sum(step["message.W"] for step in none.fast_opt.steps)
    assert np.abs(total).max() == 0 and np.abs(locked.fast_opt.steps[0]["message.W"]).max() > 0


def test_zero_initialised_sg_injects_exactly_zero_at_the_start():
    """dni's first period equals none's bit for bit (float32, Adam): the SG is 0 until B's first gradient."""
    dni, none = (_trainer(m, optimizer="adam", lr=1e-2, dtype=np.float32, clip=1.0) for m in ("dni", "none"))
    stream_a, stream_b = _stream(), _stream()
    m = np.random.default_rng(0).standard_normal((B, SIZES["message"])).astype(np.float32)
    assert not np.any(dni.sg.predict(m, np.zeros(B, np.int64))[0])
    dni.train_period(stream_a.next_period())
    none.train_period(stream_b.next_period())
    for group in ("fast_params", "slow_params"):
        for k, v in getattr(dni, group).items():
            np.testing.assert_array_equal(v, getattr(none, group)[k], err_msg=k)
            assert v.dtype == np.float32
    dni.train_period(stream_a.next_period())  # fitted once on B's gradient: now it injects something
    d = dni.collect_diagnostics()
    assert d["periods"] == 2 and d["injected_norm"] > 0 and d["finite"]
    assert dni.sg.fits == 2 * T


@pytest.mark.parametrize("mode", MODES)
def test_checkpoint_round_trip_resumes_bit_exactly(mode, tmp_path):
    kw = dict(optimizer="adam", lr=1e-2, dtype=np.float32, clip=1.0, sg_hidden=1, sg_width=4)
    straight, stream = _trainer(mode, **kw), _stream()
    for _ in range(3):
        straight.train_period(stream.next_period())
    first, stream1 = _trainer(mode, **kw), _stream()
    for _ in range(2):
        first.train_period(stream1.next_period())
    arrays, meta = first.state_dict()
    save_checkpoint(tmp_path / "c.npz", arrays, {"trainer": meta, "stream": stream1.state_dict()})
    arrays, host = load_checkpoint(tmp_path / "c.npz")
    resumed, stream2 = _trainer(mode, rng=np.random.default_rng(99), **kw), _stream(seed=42)
    resumed.load_state_dict(arrays, host["trainer"])
    stream2.load_state_dict(host["stream"])
    resumed.train_period(stream2.next_period())
    a, b = straight.state_dict(), resumed.state_dict()
    assert a[0].keys() == b[0].keys() and a[1] == b[1]
    for k in a[0]:
        np.testing.assert_array_equal(a[0][k], b[0][k], err_msg=k)
    assert straight.collect_diagnostics() == resumed.collect_diagnostics()
    with pytest.raises(ValueError, match="checkpoint is for"):
        _trainer("dni" if mode != "dni" else "none").load_state_dict(arrays, host["trainer"])


# -- the command line --------------------------------------------------------------------------
TINY = ["--digits", "standin", "--T", "2", "--batch", "4", "--embed", "8", "--fast-hidden", "8", "--slow-hidden", "8",
        "--message", "4", "--eval-every", "8", "--eval-periods", "1", "--eval-batch", "16", "--no-progress"]


def _summary(folder):
    return json.loads((folder / "summary.json").read_text())


def test_command_writes_the_summary_and_resumes_exactly(tmp_path, capsys):
    assert main([*TINY, "--mode", "dni", "--steps", "24", "--checkpoint-every", "8", "--out", str(tmp_path / "a")]) == 0
    s = _summary(tmp_path / "a")
    assert (s["mode"], s["T"], s["steps"], s["fast_updates"], s["slow_updates"]) == ("dni", 2, 24, 12, 6)
    for key in ("fast_accuracy", "slow_accuracy", "train_seconds"):
        assert isinstance(s[key], float)
    assert 0 <= s["fast_accuracy"] <= 100 and s["digits"] == "stand-in"
    assert [e["step"] for e in s["logs"]] == [0, 8, 16, 24]
    assert (tmp_path / "a" / "curves.png").stat().st_size > 0
    assert main([*TINY, "--mode", "dni", "--steps", "16", "--checkpoint-every", "8", "--out", str(tmp_path / "b")]) == 0
    assert main([*TINY, "--mode", "dni", "--steps", "24", "--checkpoint-every", "8", "--resume",
                 "--out", str(tmp_path / "b")]) == 0
    r = _summary(tmp_path / "b")
    assert [e["step"] for e in r["logs"]] == [0, 8, 16, 24]
    for key in ("fast_accuracy", "slow_accuracy", "fast_updates", "slow_updates"):
        assert r[key] == s[key], key
    ca, _ = load_checkpoint(tmp_path / "a" / "checkpoint.npz")
    cb, _ = load_checkpoint(tmp_path / "b" / "checkpoint.npz")
    for k in ca:
        np.testing.assert_array_equal(ca[k], cb[k], err_msg=k)
    assert "dni seed 0 T=2" in capsys.readouterr().out


def test_command_compares_modes_and_seeds(tmp_path):
    assert main([*TINY, "--modes", "locked,none", "--seeds", "0,1", "--steps", "8", "--out", str(tmp_path)]) == 0
    runs = json.loads((tmp_path / "compare.json").read_text())
    assert [(r["mode"], r["seed"]) for r in runs] == [("locked", 0), ("locked", 1), ("none", 0), ("none", 1)]
    assert [r["fast_updates"] for r in runs] == [2, 2, 4, 4]  # locked: once per period; none: once per window
    table = (tmp_path / "table.md").read_text()
    assert "python -m minidni.run multinet" in table and "locked mean" in table
    assert (tmp_path / "curves.png").is_file() and (tmp_path / "none" / "seed1" / "summary.json").is_file()


@pytest.mark.parametrize("argv, words", [
    (["--T", "0"], "from 1 to 16"),
    (["--T", "17"], "from 1 to 16"),
    (["--steps", "10"], "multiple of T² = 4"),
    (["--eval-every", "6"], "multiple of T² = 4"),
    (["--modes", "dni,bogus"], "not one of locked, dni, none"),
    (["--seeds", "0,0"], "distinct"),
    (["--lr", "nan"], "finite number > 0"),
    (["--sg-hidden", "3"], "from 0 to 2"),
    (["--digits", "nope"], "invalid choice"),
    (["--resume"], "no checkpoint"),
    (["--workers", "3"], "from 1 to 2"),
    (["--workers", "2", "--resume"], "not offered with --workers 2"),
])
def test_bad_options_are_one_line_errors(argv, words, tmp_path, capsys):
    assert main([*TINY, "--steps", "8", "--out", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error" in err and words in err and "Traceback" not in err


def test_resume_with_other_options_is_refused(tmp_path, capsys):
    out = str(tmp_path / "o")
    assert main([*TINY, "--steps", "8", "--out", out]) == 0
    capsys.readouterr()
    assert main([*TINY, "--steps", "16", "--lr", "0.01", "--resume", "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "other options (lr)" in err


def test_run_dispatches_multinet_and_exits_2_on_a_bad_value():
    proc = subprocess.run([sys.executable, "-m", "minidni.run", "multinet", "--T", "0"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--T" in proc.stderr


@pytest.mark.parametrize("mode", MODES)
def test_backends_agree_and_training_does_not_sync(mode, xp):
    """Two periods on the selected backend equal NumPy's (float32, to rounding); no host copy while training."""
    import strict_cupy  # noqa: PLC0415  (tests/ is on the import path; records the stand-in's host syncs)

    from minidni import backend

    states = {}
    for name in ("numpy", backend.backend_name(xp)):
        backend.set_backend(name)
        tr, stream = _trainer(mode, optimizer="adam", lr=1e-2, dtype=np.float32, clip=1.0), _stream()
        periods = [stream.next_period() for _ in range(2)]
        recorder = strict_cupy.SYNCS if name == "cupy" and sys.modules.get("cupy") is strict_cupy.module else None
        if recorder is not None:
            recorder.clear()
        for period in periods:
            tr.train_period(period)
        if recorder is not None:
            assert not recorder.events, recorder.by_site()
        assert get_xp(tr.fast_params["head.W"]) is backend.get_backend()
        states[name] = tr.state_dict()[0]
    for k, v in states["numpy"].items():
        np.testing.assert_allclose(states[backend.backend_name(xp)][k], v, rtol=1e-4, atol=1e-5, err_msg=k)
