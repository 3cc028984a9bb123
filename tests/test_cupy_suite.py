"""The CuPy suite: the trainers, checkpoints and commands on CuPy, compared with NumPy, and the
host-sync budget of a training step.

Runs on real CuPy where it sees a GPU, else on the strict stand-in (tests/strict_cupy), which
refuses every host array in a device op and records every host sync. Select it with
``pytest -m cupy`` (the ``xp`` fixture's CuPy cases of the other test files are in it too).
Tolerances. The stand-in computes with NumPy, so CuPy and NumPy runs agree to float32 rounding
(``TIGHT``: 1e-4 relative) everywhere. On a GPU the rounding differs, and Adam turns a gradient
that is 0 up to rounding (a bias before BatchNorm, a zero-initialised synthesizer's first step)
into a full +-lr step, so runs drift apart: a first step still agrees to ``TIGHT``, later values
to ``DRIFT`` (10 %, or 0.05 absolute: cosines near 0 drift most), which still catches a wrong
sign or a missing update. The feed-forward trainer cases use SGD for the modules to keep the
drift small. Checked without a GPU by ``python tests/strict_cupy/rounding_noise.py SEED``
(these tests in the GPU regime with float32 rounding noise on every stand-in result: seeds
0, 1, 2 pass); no GPU has run them yet.
"""

from __future__ import annotations

import json
import sys
from collections import namedtuple

import numpy as np
import pytest

from minidni import backend, models
from minidni.backend import to_device, to_numpy
from minidni.dni.feedforward import build_trainer, predict_logits
from minidni.dni.recurrent import MODES, RESETS, RecurrentTrainer, copy_loss
from minidni.experiments import feedforward as ff
from minidni.experiments import recurrent as rec
from minidni.io import load_checkpoint, save_checkpoint
from minidni.tasks import CopyTaskStream, Curriculum, EpisodeScorer

pytestmark = pytest.mark.cupy
TIGHT = dict(rtol=1e-4, atol=1e-5)
DRIFT = dict(rtol=0.1, atol=0.05)


def _on(name: str, fn):
    """``fn()`` with backend ``name`` selected; its result copied to the host."""
    backend.set_backend(name)
    try:
        return to_numpy(fn())
    finally:
        backend.set_backend("numpy")


def _untimed(obj):
    """``obj`` without the entries that are run timings (``*second*``): they differ run to run."""
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items() if "second" not in k}
    if isinstance(obj, list):
        return [_untimed(v) for v in obj]
    return obj


def _close(a, b, what="", tol=TIGHT):
    """``a`` equals ``b`` (nested dicts and lists), floats to ``tol``."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), what
        for k in a:
            _close(a[k], b[k], f"{what}.{k}", tol)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), what
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{what}[{i}]", tol)
    elif isinstance(a, (float, np.ndarray, np.generic)) and not isinstance(a, bool):
        np.testing.assert_allclose(a, b, err_msg=what, **tol)
    else:
        assert a == b, what


def _on_standin(cupy) -> bool:
    import strict_cupy  # noqa: PLC0415

    return cupy is strict_cupy.module


def _parity(got, ref, cupy, what=""):
    """A CuPy run against the NumPy run of the same work: ``TIGHT`` on the stand-in, ``DRIFT`` on a GPU."""
    _close(got, ref, what, TIGHT if _on_standin(cupy) else DRIFT)


# -- the recurrent trainer, every mode ---------------------------------------------------------------
def _copy_windows(mode: str, reset: str, windows: int = 6, trainer: RecurrentTrainer | None = None):
    """Train ``windows`` Copy windows (B=4, H=8, T=3); host results: params, losses, episodes, diagnostics."""
    xp = backend.get_backend()
    cur = Curriculum("copy")
    stream = CopyTaskStream(cur, 4, rng=np.random.default_rng(0))
    scorer = EpisodeScorer(4)
    tr = trainer or RecurrentTrainer(10, 9, 8, mode=mode, reset=reset, lr=1e-2, rng=np.random.default_rng(1))
    losses = []
    for _ in range(windows):
        w = stream.next_window(3)
        target, mask, out = to_device(w.target), to_device(w.mask), {}

        def loss_grad(logits):
            loss, dlogits, out["bits"] = copy_loss(logits, target, mask)
            return loss, dlogits

        losses.append(tr.train_window(to_device(w.x), loss_grad, episode_end=w.episode_end))
        assert backend.get_xp(losses[-1]) is xp  # the loss stays on the device
        scorer.add(out["bits"], w.episode_end, w.level)
    diag = tr.collect_diagnostics()
    diag.pop("first_nonfinite")
    return {"params": dict(tr.core_params), "losses": [float(to_numpy(v)) for v in losses],
            "episodes": [list(e) for e in scorer.collect()], "diag": diag}


@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("mode", MODES)
def test_recurrent_trainer_on_cupy_matches_numpy(cupy, mode, reset):
    ref = _on("numpy", lambda: _copy_windows(mode, reset))
    got = _on("cupy", lambda: _copy_windows(mode, reset))
    assert ref["episodes"], "no episode ended: the scorer comparison would be empty"
    _close(got["losses"][0], ref["losses"][0], "first loss")
    _parity(got, ref, cupy)


def test_recurrent_checkpoint_round_trip_on_cupy(cupy, tmp_path):
    """3 windows, a checkpoint file, a fresh trainer loads it: 3 more windows as if uninterrupted;
    a NumPy checkpoint resumes on CuPy to NumPy's result."""
    def make():
        return RecurrentTrainer(10, 9, 8, mode="dni-aux", lr=1e-2, rng=np.random.default_rng(1))

    def first_half(path):
        tr = make()
        _copy_windows("dni-aux", "episode", 3, trainer=tr)
        save_checkpoint(path, *tr.state_dict())
        return tr

    def second_half(tr):
        return _copy_windows("dni-aux", "episode", 3, trainer=tr)["params"]

    def resumed(path):
        tr = make()
        tr.load_state_dict(*load_checkpoint(path))
        return second_half(tr)

    uninterrupted = _on("cupy", lambda: second_half(first_half(tmp_path / "cupy.npz")))
    _close(_on("cupy", lambda: resumed(tmp_path / "cupy.npz")), uninterrupted, "cupy checkpoint")
    on_numpy = _on("numpy", lambda: second_half(first_half(tmp_path / "numpy.npz")))
    _parity(_on("cupy", lambda: resumed(tmp_path / "numpy.npz")), on_numpy, cupy, "numpy checkpoint resumed on cupy")


# -- the feed-forward trainer, every method ------------------------------------------------------
FF_CASES = {
    "bprop": dict(method="bprop"),
    "no-bprop": dict(method="no-bprop"),
    "dni": dict(method="dni", warmup=1),
    "cdni": dict(method="cdni", p_update=0.7),
    "dni-unlock": dict(method="dni", unlock_forward=True),
    "cdni-cnn": dict(method="cdni", model="cnn"),
}


def _ff_steps(case: dict, steps: int = 4):
    case = dict(case)
    model = case.pop("model", "fcn")
    rng = np.random.default_rng(0)
    if model == "fcn":
        nets, in_shape = models.fcn(3, in_dim=12, width=16, rng=rng), (12,)
    else:
        nets, in_shape = models.cnn(2, in_shape=(1, 8, 8), filters=4, rng=rng), (1, 8, 8)
    # plain SGD for the modules and a small lr for the synthesizers' Adam: on a GPU, Adam's first steps
    # (+-lr whatever the gradient's size) would turn rounding into drift (module docstring)
    tr = build_trainer(nets, in_shape=in_shape, lr=1e-2, optimizer="sgd", sg_lr=1e-4,
                       sg_width=16 if model == "fcn" else 4, seed=3, rng=rng, **case)
    data = np.random.default_rng(1)
    results = []
    for step in range(steps):
        x = to_device(data.random((16, *in_shape)).astype(np.float32))
        y = to_device(data.integers(0, 10, 16))
        results.append(tr.step(x, y, diagnose=step % 2 == 1).to_host())
    x = to_device(data.random((32, *in_shape)).astype(np.float32))
    params = {f"{i}.{k}": v for i, m in enumerate(tr.modules) for k, v in m.net.params.items()}
    return {"results": results, "logits": predict_logits(tr.modules, x), "params": params}


@pytest.mark.parametrize("case", FF_CASES)
def test_feedforward_trainer_on_cupy_matches_numpy(cupy, case):
    ref = _on("numpy", lambda: _ff_steps(FF_CASES[case]))
    got = _on("cupy", lambda: _ff_steps(FF_CASES[case]))
    _close(got["results"][0], ref["results"][0], "first step")
    _parity(got, ref, cupy)


# -- the commands, tiny -----------------------------------------------------------------------
RECURRENT_ARGS = ["--steps", "24", "--hidden", "8", "--batch", "4", "--T", "3", "--log-every", "8",
                  "--checkpoint-every", "12", "--no-progress"]


def _summary_core(s: dict) -> dict:
    """What a run computed (not its timing or backend)."""
    logs = _untimed(s.get("logs", s.get("curves", {}).get("logs", [])))
    keep = ("max_episode_length", "level", "test_error_percent", "valid_bpc", "test_bpc", "steps")
    return {"logs": logs, **{k: s[k] for k in keep if k in s}}


@pytest.mark.parametrize("task, extra", [("copy", []), ("repeat-copy", ["--mode", "dni-aux", "--no-compare"])])
def test_copy_commands_on_cupy_match_numpy(cupy, tmp_path, task, extra, capsys):
    main = rec.main_copy if task == "copy" else rec.main_repeat_copy
    summaries = {}
    for name in ("numpy", "cupy"):
        out = tmp_path / name
        assert main([*RECURRENT_ARGS, *extra, "--backend", name, "--out", str(out)]) == 0, capsys.readouterr().err
        modes = ["dni", "bptt"] if task == "copy" else [None]
        summaries[name] = [json.loads(((out / m) if m else out).joinpath("summary.json").read_text()) for m in modes]
    assert [s["backend"] for s in summaries["cupy"]] == ["cupy"] * len(summaries["cupy"])
    _parity([_summary_core(s) for s in summaries["cupy"]], [_summary_core(s) for s in summaries["numpy"]], cupy)


def test_copy_resume_on_cupy_gives_the_uninterrupted_result(cupy, tmp_path):
    args = [*RECURRENT_ARGS, "--no-compare", "--mode", "dni", "--backend", "cupy"]
    assert rec.main_copy([*args, "--out", str(tmp_path / "full")]) == 0
    part = [*args, "--out", str(tmp_path / "part")]
    assert rec.main_copy([*part[:1], "12", *part[2:]]) == 0  # --steps 12: stops at the checkpoint
    assert rec.main_copy([*part, "--resume"]) == 0
    (a, meta_a), (b, meta_b) = (load_checkpoint(tmp_path / d / "checkpoint.npz") for d in ("full", "part"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-7, err_msg=k)


def _tiny_ptb():
    PTB = namedtuple("PTB", "vocab train valid test")
    rng = np.random.default_rng(0)
    return PTB(tuple("abcde"), rng.integers(0, 5, 400), rng.integers(0, 5, 60), rng.integers(0, 5, 60))


def test_ptb_run_on_cupy_matches_numpy(cupy, tmp_path):
    runs = {}
    for name in ("numpy", "cupy"):
        args = rec.make_parser("ptb").parse_args(["--steps", "12", "--hidden", "8", "--batch", "4", "--T", "4",
                                                  "--eval-every", "6", "--log-every", "6", "--no-progress",
                                                  "--backend", name, "--out", str(tmp_path / name)])
        (runs[name],) = rec.run(args, "ptb", _tiny_ptb())
    _parity(_summary_core(runs["cupy"]), _summary_core(runs["numpy"]), cupy)


def _tiny_images(seed=0, n_train=64, n_test=32, shape=(28, 28)):
    rng = np.random.default_rng(seed)

    def split(n):
        y = rng.integers(0, 10, n)
        x = rng.random((n, *shape)).astype(np.float32) * 0.3
        x.reshape(n, -1)[:, :10] += (y[:, None] == np.arange(10)) * 0.7
        return x, y

    return ff.Dataset(*split(n_train), *split(n_test))


MNIST_CASES = {"bprop": [], "no-bprop": [], "dni": ["--warmup", "1"], "cdni": ["--p-update", "0.8"],
               "dni-unlock": ["--unlock", "forward"]}


@pytest.mark.parametrize("case", MNIST_CASES)
def test_mnist_command_on_cupy_matches_numpy(cupy, tmp_path, case, capsys):
    method = case.split("-unlock")[0]
    summaries = {}
    for name in ("numpy", "cupy"):
        argv = ["--method", method, *MNIST_CASES[case], "--layers", "2", "--width", "16", "--sg-width", "16",
                "--steps", "6", "--batch", "16", "--lr", "1e-3", "--eval-every", "3", "--log-every", "2",
                "--no-progress", "--backend", name, "--out", str(tmp_path / name)]
        assert ff.main_mnist(argv, load=lambda data_dir: _tiny_images()) == 0, capsys.readouterr().err
        summaries[name] = json.loads((tmp_path / name / "summary.json").read_text())
    assert summaries["cupy"]["backend"] == "cupy"
    _parity(_summary_core(summaries["cupy"]), _summary_core(summaries["numpy"]), cupy)


def test_cifar_cnn_command_on_cupy(cupy, tmp_path):
    argv = ["--model", "cnn", "--width", "4", "--layers", "2", "--method", "dni", "--sg-width", "4", "--steps", "2",
            "--batch", "4", "--eval-every", "2", "--log-every", "1", "--no-progress", "--backend", "cupy",
            "--out", str(tmp_path)]
    assert ff.main_cifar10(argv, load=lambda data_dir: _tiny_images(n_train=8, n_test=4, shape=(3, 32, 32))) == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["backend"] == "cupy" and np.isfinite(s["test_error_percent"])


def test_mnist_resume_on_cupy_gives_the_uninterrupted_result(cupy, tmp_path, capsys):
    ff.main_mnist(["--help"])
    if "--checkpoint-every" not in capsys.readouterr().out:
        pytest.skip("python -m minidni.run mnist has no --checkpoint-every in this checkout")
    argv = ["--method", "cdni", "--layers", "2", "--width", "16", "--sg-width", "16", "--batch", "16",
            "--eval-every", "3", "--log-every", "3", "--checkpoint-every", "3", "--no-progress", "--backend", "cupy"]
    load = lambda data_dir: _tiny_images()  # noqa: E731
    assert ff.main_mnist([*argv, "--steps", "6", "--out", str(tmp_path / "full")], load=load) == 0
    assert ff.main_mnist([*argv, "--steps", "3", "--out", str(tmp_path / "part")], load=load) == 0
    assert ff.main_mnist([*argv, "--steps", "6", "--resume", "--out", str(tmp_path / "part")], load=load) == 0
    full, part = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("full", "part"))
    _close(_summary_core(part), _summary_core(full))


@pytest.mark.parametrize("mode", ["locked", "dni", "none"])
def test_multinet_command_on_cupy_matches_numpy(cupy, tmp_path, mode):
    from minidni.experiments import multinet  # noqa: PLC0415

    tiny = ["--digits", "standin", "--T", "2", "--batch", "4", "--embed", "8", "--fast-hidden", "8",
            "--slow-hidden", "8", "--message", "4", "--eval-every", "8", "--eval-periods", "1", "--eval-batch", "16",
            "--steps", "16", "--no-progress", "--mode", mode]
    runs = {}
    for name in ("numpy", "cupy"):
        assert multinet.main([*tiny, "--backend", name, "--out", str(tmp_path / name)]) == 0
        runs[name] = json.loads((tmp_path / name / "summary.json").read_text())
    keep = ("fast_accuracy", "slow_accuracy", "fast_updates", "slow_updates")
    _parity({k: runs["cupy"][k] for k in keep} | {"logs": _summary_core(runs["cupy"])["logs"]},
            {k: runs["numpy"][k] for k in keep} | {"logs": _summary_core(runs["numpy"])["logs"]}, cupy)


@pytest.mark.parametrize("bench, extra", [("layers", ["--quick"]), ("recurrent", ["--quick"]),
                                          ("feedforward", ["--rounds", "2", "--steps", "2", "--batch", "8",
                                                           "--sg-width", "8"])])
def test_benches_run_on_cupy(cupy, tmp_path, bench, extra, capsys):
    import importlib  # noqa: PLC0415

    main = importlib.import_module(f"minidni.bench.{bench}").main
    assert main(["--backend", "cupy", *extra, "--out", str(tmp_path / "b.json")]) == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "b.json").read_text())


@pytest.mark.parametrize("table", ["table1", "table2"])
def test_table_commands_on_cupy_match_numpy(cupy, tmp_path, monkeypatch, capsys, table):
    import importlib  # noqa: PLC0415

    main = importlib.import_module(f"minidni.experiments.{table}").main
    if table == "table1":
        monkeypatch.setitem(ff.LOADERS, "mnist", lambda data_dir: _tiny_images())  # the runs run inline
        argv = ["--layers", "3", "--methods", "bprop", "cdni", "--steps", "2", "--batch", "16", "--eval-every", "1",
                "--log-every", "1", "--sg-width", "4"]
    else:
        argv = ["--tasks", "copy", "--modes", "bptt", "dni", "--T", "2", "--seeds", "0", "--steps", "12",
                "--hidden", "4", "--batch", "2", "--extra", "--log-every 4"]
    tables = {}
    for name in ("numpy", "cupy"):
        assert main([*argv, "--executor", "inline", "--backend", name, "--out", str(tmp_path / name / "runs"),
                     "--figures", str(tmp_path / name / "fig")]) == 0, capsys.readouterr().err
        (result,) = (tmp_path / name / "fig").glob(f"{table}*.json")
        tables[name] = _untimed(json.loads(result.read_text())["ours" if table == "table1" else "table"])
    _parity(tables["cupy"], tables["numpy"], cupy)


# -- the host-sync budget -----------------------------------------------------------------------
def _syncs_by_step(standin, monkeypatch, trainer_cls, method: str):
    """Stamp every host sync with the number of steps trained so far (the trainer's counter)."""
    original = getattr(trainer_cls, method)

    def counted(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        standin.SYNCS.step = self.step if isinstance(self.step, int) else standin.SYNCS.step + 1
        return result
    monkeypatch.setattr(trainer_cls, method, counted)


def _budget_report(events, allowed) -> str:
    bad = [e for e in events if e.step is not None and e.step not in allowed]
    return "; ".join(f"step {e.step}: {e.kind} at {e.site}" for e in bad[:8]) + (f" ... ({len(bad)} in all)" if bad else "")


def test_recurrent_windows_do_not_sync_between_logs_evals_and_checkpoints(standin_cupy, monkeypatch, tmp_path):
    import strict_cupy  # noqa: PLC0415

    _syncs_by_step(strict_cupy, monkeypatch, RecurrentTrainer, "train_window")
    strict_cupy.SYNCS.step = 0
    steps, log_every, checkpoint_every = 30, 10, 15
    assert rec.main_copy(["--steps", str(steps), "--hidden", "8", "--batch", "4", "--T", "3", "--log-every",
                          str(log_every), "--checkpoint-every", str(checkpoint_every), "--no-compare",
                          "--no-progress", "--backend", "cupy", "--out", str(tmp_path)]) == 0
    allowed = {s for s in range(steps + 1) if s % log_every == 0 or s % checkpoint_every == 0} | {steps}
    events = strict_cupy.SYNCS.events
    assert any(e.step == log_every for e in events), "no sync at a log: the stamping is broken"
    assert not [e for e in events if e.step not in allowed], _budget_report(events, allowed)


def test_ptb_windows_do_not_sync_between_logs_and_evals(standin_cupy, monkeypatch, tmp_path):
    import strict_cupy  # noqa: PLC0415

    _syncs_by_step(strict_cupy, monkeypatch, RecurrentTrainer, "train_window")
    strict_cupy.SYNCS.step = 0
    args = rec.make_parser("ptb").parse_args(["--steps", "12", "--hidden", "8", "--batch", "4", "--T", "4",
                                              "--eval-every", "6", "--log-every", "4", "--checkpoint-every", "12",
                                              "--no-progress", "--backend", "cupy", "--out", str(tmp_path)])
    rec.run(args, "ptb", _tiny_ptb())
    allowed = {0, 4, 6, 8, 12}
    events = strict_cupy.SYNCS.events
    assert any(e.step == 6 for e in events), "no sync at an evaluation: the stamping is broken"
    assert not [e for e in events if e.step not in allowed], _budget_report(events, allowed)


@pytest.mark.parametrize("method", ["bprop", "cdni"])
def test_feedforward_steps_do_not_sync_between_logs_and_evals(standin_cupy, monkeypatch, tmp_path, method):
    import strict_cupy  # noqa: PLC0415
    from minidni.dni.feedforward import FeedForwardTrainer  # noqa: PLC0415

    calls = []
    original = FeedForwardTrainer.step

    def counted(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        calls.append(1)
        strict_cupy.SYNCS.step = len(calls)
        return result
    monkeypatch.setattr(FeedForwardTrainer, "step", counted)
    strict_cupy.SYNCS.step = 0
    argv = ["--method", method, "--layers", "2", "--width", "16", "--sg-width", "16", "--steps", "12",
            "--batch", "16", "--eval-every", "6", "--log-every", "4", "--no-progress", "--backend", "cupy",
            "--out", str(tmp_path)]
    assert ff.main_mnist(argv, load=lambda data_dir: _tiny_images()) == 0
    allowed = {0, 4, 6, 8, 12}
    events = strict_cupy.SYNCS.events
    assert any(e.step == 4 for e in events), "no sync at a log: the stamping is broken"
    assert not [e for e in events if e.step not in allowed], _budget_report(events, allowed)


# -- python -m minidni.bench gpu: its no-GPU path and its plan (it runs only where a GPU is) ----------
def _fake_nvidia_smi(folder, listing: str, code: int = 0):
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\n[ \"$1\" = -L ] && {{ printf '%s\\n' '{listing}'; exit {code}; }}\n"
                      "echo '| NVIDIA-SMI 550.54  Driver Version: 550.54  CUDA Version: 12.4 |'\n")
    script.chmod(0o755)


@pytest.mark.parametrize("smi", [None, "NVIDIA-SMI has failed because it couldn't communicate with the driver"])
def test_gpu_check_without_a_gpu_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, smi):
    from minidni.bench import gpu  # noqa: PLC0415

    monkeypatch.setenv("PATH", str(tmp_path))
    if smi is not None:
        _fake_nvidia_smi(tmp_path, smi, code=9)
    assert gpu.main(["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no NVIDIA GPU on this machine" in err
    assert ("nvidia-smi not found" in err) == (smi is None)
    assert not (tmp_path / "out").exists()  # nothing was started


def test_gpu_check_finds_the_gpu_and_the_cupy_wheel_for_its_cuda(tmp_path, monkeypatch):
    from minidni.bench import gpu  # noqa: PLC0415

    monkeypatch.setenv("PATH", str(tmp_path))
    _fake_nvidia_smi(tmp_path, "GPU 0: NVIDIA H200 (UUID: GPU-0)")
    assert gpu.nvidia_gpus() == (["GPU 0: NVIDIA H200 (UUID: GPU-0)"], "12.4")
    assert gpu.cupy_requirement("12.4") == "cupy-cuda12x>=13"  # the gpu extra of pyproject.toml
    assert gpu.cupy_requirement("13.0") == "cupy-cuda13x>=13"  # gpu-cuda13


def test_gpu_check_plan_runs_everything_on_cupy_inside_the_budget(tmp_path):
    from minidni.bench import gpu  # noqa: PLC0415

    full = gpu.plan(tmp_path, python="py", install="cupy-cuda12x>=13", tests_dir=tmp_path / "tests",
                    torch_help="usage: ... [--device {cpu,cuda}] [--out OUT]")
    assert [s.name for s in full] == ["install", "device", "tests", "bench-layers", "bench-recurrent",
                                      "bench-feedforward", "bench-torch", "copy"]
    by_name = {s.name: s.argv for s in full}
    assert by_name["install"] == ["py", "-m", "pip", "install", "cupy-cuda12x>=13"]
    assert by_name["tests"][:6] == ["py", "-m", "pytest", "-q", "-m", "cupy or gpu"]
    assert by_name["copy"][:6] == ["py", "-m", "minidni.run", "copy", "--backend", "cupy"]
    for name in ("bench-layers", "bench-recurrent", "bench-feedforward"):
        assert by_name[name][4:6] == ["--backend", "cupy"] and by_name[name][-2:] == ["--out", str(
            tmp_path / f"bench_{name[6:]}.json")]
    assert "--device" in by_name["bench-torch"] and "cuda" in by_name["bench-torch"] and full[6].skip is None
    cpu_only = gpu.plan(tmp_path, python="py", install=None, tests_dir=None, torch_help="usage: [--threads N]")
    assert "CPU only" in next(s for s in cpu_only if s.name == "bench-torch").skip
    assert all(str(tmp_path) in " ".join(argv) for name, argv in by_name.items() if name not in ("install", "device"))
    bare = gpu.plan(tmp_path, python="py", install=None, tests_dir=None, torch_help=None)
    assert [s.name for s in bare] == ["device", "bench-layers", "bench-recurrent", "bench-feedforward", "copy"]
    assert "--quick" in gpu.plan(tmp_path, python="py", install=None, tests_dir=None, torch_help=None,
                                 quick=True)[1].argv


def test_gpu_check_records_every_step_and_skips_what_the_budget_cannot_fit(tmp_path, monkeypatch, capsys):
    from minidni.bench import gpu  # noqa: PLC0415

    monkeypatch.setattr(gpu, "nvidia_gpus", lambda: (["GPU 0: fake"], "12.4"))
    py = sys.executable
    steps = [gpu.Step("ok", [py, "-c", "print('hello')"], 30), gpu.Step("fails", [py, "-c", "raise SystemExit(3)"], 30),
             gpu.Step("slow", [py, "-c", "import time; time.sleep(30)"], 2), gpu.Step("late", [py, "-c", "0"], 30),
             gpu.Step("no-cuda", [py, "-c", "0"], 30, skip="no CUDA option")]
    monkeypatch.setattr(gpu, "plan", lambda out, **kw: steps)
    assert gpu.main(["--out", str(tmp_path), "--budget", "11"]) == 1  # after "slow" (2 s) under 10 s are left
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    status = {s["name"]: s["status"] for s in report["steps"]}
    assert status["ok"] == "ok" and status["fails"] == "failed" and status["late"].startswith("skipped")
    assert status["slow"] == "timed out after 2 s" and status["no-cuda"] == "skipped: no CUDA option"
    assert (tmp_path / "logs" / "ok.log").read_text() == "hello\n" and report["gpus"] == ["GPU 0: fake"]
    assert "1 of 5 steps ok; not ok: fails, slow, late; cannot run here: no-cuda" in capsys.readouterr().out
