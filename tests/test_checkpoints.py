"""Checkpoints are one atomic unit: an interruption at any write boundary resumes exactly.

A checkpoint is a single ``checkpoint.npz`` (arrays and JSON metadata together,
:func:`minidni.io.save_checkpoint`), written to a temporary name, flushed, then
renamed over the old one. Each test interrupts one checkpoint write (with the
KeyboardInterrupt a Ctrl-C raises) at one boundary: half-way through writing the
temporary file, after it is complete but before the rename, and right after the
rename. The interrupted run exits 130; ``--resume`` then continues from the last
complete checkpoint, and the finished run equals an uninterrupted one bit for bit.
"""

from __future__ import annotations

import io as _io
import json
import os

import numpy as np
import pytest

import minidni.io
from minidni.io import load_checkpoint

BOUNDARIES = ("while writing", "before rename", "after rename")


def _interrupt_checkpoint(monkeypatch, boundary: str, nth: int) -> None:
    """Raise KeyboardInterrupt in the ``nth`` checkpoint write, at ``boundary``."""
    calls = {"savez": 0, "replace": 0}
    savez, replace = minidni.io.np.savez, minidni.io.os.replace

    def partial_savez(f, **arrays):
        calls["savez"] += 1
        if calls["savez"] != nth:
            return savez(f, **arrays)
        buf = _io.BytesIO()
        savez(buf, **arrays)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])  # half a zip file, then Ctrl-C
        raise KeyboardInterrupt

    def interrupted_replace(src, dst):
        if not str(dst).endswith("checkpoint.npz"):
            return replace(src, dst)
        calls["replace"] += 1
        if calls["replace"] != nth:
            return replace(src, dst)
        if boundary == "after rename":
            replace(src, dst)
        raise KeyboardInterrupt

    if boundary == "while writing":
        monkeypatch.setattr(minidni.io.np, "savez", partial_savez)
    else:
        monkeypatch.setattr(minidni.io.os, "replace", interrupted_replace)


def _same_checkpoints(a_path, b_path, volatile=("train_seconds", "logs", "evals")):
    (a, meta_a), (b, meta_b) = load_checkpoint(a_path), load_checkpoint(b_path)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    strip = lambda m: {k: v for k, v in m.items() if k not in volatile}  # noqa: E731  (wall-clock fields)
    assert strip(meta_a) == strip(meta_b)


def _no_temporaries(folder):
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")], "a temporary file was left behind"


# -- recurrent (copy) ----------------------------------------------------------------------------
def _copy_argv(out, steps):
    return ["--steps", str(steps), "--hidden", "8", "--batch", "4", "--T", "3", "--log-every", "4",
            "--checkpoint-every", "4", "--no-progress", "--no-compare", "--mode", "dni", "--out", str(out)]


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_copy_interrupted_checkpoint_resumes_exactly(tmp_path, monkeypatch, boundary, capsys):
    from minidni.experiments.recurrent import main_copy

    full, part = tmp_path / "full", tmp_path / "part"
    assert main_copy(_copy_argv(full, 12)) == 0
    with monkeypatch.context() as m:
        _interrupt_checkpoint(m, boundary, nth=2)  # the checkpoint of step 8
        assert main_copy(_copy_argv(part, 12)) == 130
    _no_temporaries(part)
    _, meta = load_checkpoint(part / "checkpoint.npz")
    assert meta["trainer"]["step"] == (8 if boundary == "after rename" else 4)
    assert main_copy([*_copy_argv(part, 12), "--resume"]) == 0
    _same_checkpoints(full / "checkpoint.npz", part / "checkpoint.npz")
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (full, part))
    assert [dict(e, train_seconds=0) for e in sa["logs"]] == [dict(e, train_seconds=0) for e in sb["logs"]]
    assert sa["max_episode_length"] == sb["max_episode_length"]


def test_copy_resume_without_checkpoint_stops(tmp_path, capsys):
    from minidni.experiments.recurrent import main_copy

    assert main_copy([*_copy_argv(tmp_path / "none", 4), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint" in err and "without --resume" in err
    assert not (tmp_path / "none").exists()


def test_compare_resume_starts_a_mode_without_checkpoint_and_says_so(tmp_path, capsys):
    """With --compare, a mode interrupted before its first checkpoint starts at step 0, in one line."""
    from minidni.experiments.recurrent import main_copy

    argv = [a for a in _copy_argv(tmp_path, 8) if a != "--no-compare"]
    assert main_copy(argv) == 0
    os.remove(tmp_path / "bptt" / "checkpoint.npz")
    capsys.readouterr()
    assert main_copy([*argv, "--resume"]) == 0
    out = capsys.readouterr().out
    assert "bptt has no checkpoint" in out and "starts from step 0" in out


# -- feed-forward (mnist, one process) --------------------------------------------------------------
def _tiny_mnist(_data_dir):
    from minidni.experiments.feedforward import Dataset

    rng = np.random.default_rng(0)
    return Dataset(rng.random((300, 784), dtype=np.float32), rng.integers(0, 10, 300),
                   rng.random((100, 784), dtype=np.float32), rng.integers(0, 10, 100))


def _mnist_argv(out, steps, method):
    return ["--layers", "3", "--width", "16", "--sg-width", "16", "--batch", "32", "--lr", "1e-3", "--steps", str(steps),
            "--eval-every", "5", "--log-every", "3", "--checkpoint-every", "10", "--p-update", "0.7",
            "--no-progress", "--method", method, "--out", str(out)]


@pytest.mark.parametrize("method, boundary", [("cdni", b) for b in BOUNDARIES] + [("bprop", "before rename"),
                                                                                  ("dni", "after rename")])
def test_mnist_interrupted_checkpoint_resumes_exactly(tmp_path, monkeypatch, method, boundary):
    """One process: an epoch boundary (300 examples / batch 32) and p_update's coins are crossed too."""
    from minidni.experiments.feedforward import main_mnist

    full, part = tmp_path / "full", tmp_path / "part"
    assert main_mnist(_mnist_argv(full, 30, method), load=_tiny_mnist) == 0
    with monkeypatch.context() as m:
        _interrupt_checkpoint(m, boundary, nth=2)  # the checkpoint of step 20
        assert main_mnist(_mnist_argv(part, 30, method), load=_tiny_mnist) == 130
    _no_temporaries(part)
    assert load_checkpoint(part / "checkpoint.npz")[1]["step"] == (20 if boundary == "after rename" else 10)
    assert main_mnist([*_mnist_argv(part, 30, method), "--resume"], load=_tiny_mnist) == 0
    _same_checkpoints(full / "checkpoint.npz", part / "checkpoint.npz")
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (full, part))
    assert sa["test_error_percent"] == sb["test_error_percent"]
    assert [e["loss"] for e in sa["curves"]["logs"]] == [e["loss"] for e in sb["curves"]["logs"]]


def test_mnist_resume_refuses_other_options(tmp_path, capsys):
    from minidni.experiments.feedforward import main_mnist

    assert main_mnist(_mnist_argv(tmp_path, 10, "cdni"), load=_tiny_mnist) == 0
    capsys.readouterr()
    assert main_mnist([*_mnist_argv(tmp_path, 20, "cdni"), "--lr", "2e-3", "--resume"], load=_tiny_mnist) == 2
    err = capsys.readouterr().err
    assert "different options" in err and "lr" in err and len(err.strip().splitlines()) == 1
