"""The bp-lambda grid command at a tiny budget: files, rows, resume of finished runs, one-line errors."""

import json

import numpy as np
import pytest

from minidni.experiments import bp_lambda, feedforward

COPY = ["--parts", "copy", "--nsteps", "2", "--lambdas", "0.5", "--horizon", "2", "--truth-windows", "2",
        "--seeds", "0", "--steps", "50", "--hidden", "4", "--batch", "2", "--extra", "--log-every 10 --phase aligned",
        "--workers", "2", "--executor", "processes"]


def _paths(tmp_path):
    return ["--out", str(tmp_path / "runs"), "--figures", str(tmp_path / "fig")]


def test_copy_part_writes_table_json_png_and_resume_reuses_finished_runs(tmp_path, capsys):
    assert bp_lambda.main(COPY + _paths(tmp_path)) == 0
    md = (tmp_path / "fig" / "bp_lambda.md").read_text()
    data = json.loads((tmp_path / "fig" / "bp_lambda.json").read_text())
    assert (tmp_path / "fig" / "bp_lambda.png").stat().st_size > 1000
    for row in ("| bootstrap | ", "| nstep n=2 | ", "| lambda λ=0.5 K=2 | "):
        assert row in md
    assert "Copy at T=3: 50 windows per run" in md and "phase aligned" in md and "Command: `" in md
    assert [(r["label"], r["steps"], r["reused"]) for r in data["runs"]] == [
        ("bootstrap", 50, False), ("nstep n=2", 50, False), ("lambda λ=0.5 K=2", 50, False)]
    assert all(r["true_cosine"] is not None and r["speed"] > 0 for r in data["runs"])
    run = json.loads((tmp_path / "runs" / "copy" / "lambda0.5-K2" / "seed0" / "summary.json").read_text())
    assert run["options"]["sg_target"] == "lambda" and run["options"]["sg_truth_windows"] == 2
    capsys.readouterr()
    assert bp_lambda.main(COPY + _paths(tmp_path) + ["--resume", "--name", "again"]) == 0
    again = json.loads((tmp_path / "fig" / "again.json").read_text())
    assert all(r["reused"] for r in again["runs"]) and "(reused)" in capsys.readouterr().out
    assert again["table"] == json.loads(json.dumps(data["table"]))


def test_mnist_part_tabulates_test_error_against_lambda(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    tiny = feedforward.Dataset(rng.random((64, 784), dtype=np.float32), rng.integers(0, 10, 64),
                               rng.random((32, 784), dtype=np.float32), rng.integers(0, 10, 32))
    monkeypatch.setitem(feedforward.LOADERS, "mnist", lambda data_dir: tiny)
    argv = ["--parts", "mnist", "--mnist-lambdas", "0", "0.5", "1", "--mnist-steps", "4", "--mnist-batch", "16",
            "--sg-width", "4", "--seeds", "0", "--executor", "inline", *_paths(tmp_path)]
    assert bp_lambda.main(argv) == 0
    md = (tmp_path / "fig" / "bp_lambda.md").read_text()
    assert "MNIST FCN-3, every-layer DNI trained with BP(λ): 4 steps per run" in md
    assert "| 0 | " in md and "| 0.5 | " in md and "| 1 | " in md
    runs = json.loads((tmp_path / "fig" / "bp_lambda.json").read_text())["runs"]
    assert [r["lam"] for r in runs] == [0.0, 0.5, 1.0] and all(0 <= r["test_error"] <= 100 for r in runs)
    assert (tmp_path / "fig" / "bp_lambda.png").stat().st_size > 1000


@pytest.mark.parametrize("bad, expect", [
    (["--extra", "--sg-target nstep"], "--extra may not set --sg-target"),
    (["--extra", "--sg-truth 3"], "--extra may not set --sg-truth-windows"),
    (["--extra", "--phase sideways"], "the copy runs would reject their options"),
    (["--lambdas", "0.5", "0.5"], "--lambdas lists 0.5 more than once"),
    (["--nsteps", "1"], "1 is out of range (accepted: an integer from 2 to 64)"),
    (["--mnist-lambdas", "1.5"], "1.5 is out of range (accepted: a finite number >= 0 and <= 1)"),
    (["--name", "a/b"], "is not a plain file name"),
    (["--horizon", "100000", "--hidden", "100000"], "is out of range"),
])
def test_bad_options_are_one_line_errors(tmp_path, capsys, bad, expect):
    assert bp_lambda.main(bad + _paths(tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expect in err and err.startswith("python -m minidni.run bp-lambda: error:")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "fig").exists()
