"""Table 2 grid command: files and rows at a tiny budget, resume of finished cells, one-line errors."""

import json

import pytest

from minidni.experiments import table2

TINY = ["--tasks", "copy", "--modes", "bptt", "dni", "--T", "2", "--seeds", "0", "--steps", "12",
        "--hidden", "4", "--batch", "2", "--workers", "2", "--extra", "--log-every 4", "--executor", "processes"]


def test_grid_writes_table_json_png_and_resume_reuses_finished_cells(tmp_path, capsys):
    argv = TINY + ["--out", str(tmp_path / "runs"), "--figures", str(tmp_path / "fig")]
    assert table2.main(argv) == 0
    md = (tmp_path / "fig" / "table2.md").read_text()
    data = json.loads((tmp_path / "fig" / "table2.json").read_text())
    assert (tmp_path / "fig" / "table2.png").stat().st_size > 1000
    assert "| bptt | " in md and "| dni | " in md and "(7)" in md and "(16)" in md  # the paper's T=2 Copy cells
    assert "12 training windows per run" in md and "dni vs bptt (mean over seeds):" in md
    assert {(r["mode"], r["T"], r["seed"], r["reused"]) for r in data["runs"]} == {("bptt", 2, 0, False),
                                                                                    ("dni", 2, 0, False)}
    assert all(r["steps"] == 12 and "error" not in r for r in data["runs"])
    summary = tmp_path / "runs" / "copy" / "dni" / "T2" / "seed0" / "summary.json"
    mtime = summary.stat().st_mtime_ns
    capsys.readouterr()
    assert table2.main(argv + ["--resume", "--name", "again"]) == 0
    again = json.loads((tmp_path / "fig" / "again.json").read_text())
    assert all(r["reused"] for r in again["runs"]) and summary.stat().st_mtime_ns == mtime
    assert again["table"] == json.loads(json.dumps(data["table"]))
    assert "(reused)" in capsys.readouterr().out


def test_finished_cell_needs_all_steps_same_options_and_no_divergence(tmp_path):
    cell = {"out": tmp_path}
    options = {"lr": 0.003, "hidden": 4}

    def write(**kw):
        s = {"steps": 10, "options": {**options, "out": "x"}, "diverged": None, **kw}
        (tmp_path / "summary.json").write_text(json.dumps(s))

    assert table2._finished(cell, options, 10) is None  # nothing there yet
    write()
    assert table2._finished(cell, options, 10)["steps"] == 10
    assert table2._finished(cell, options, 20) is None
    assert table2._finished(cell, {**options, "lr": 0.01}, 10) is None
    write(diverged="the loss became NaN")
    assert table2._finished(cell, options, 10) is None
    write(steps=5, stopped_early=True)  # PTB's early stopping counts as finished
    assert table2._finished(cell, options, 10)["steps"] == 5


@pytest.mark.parametrize("bad, expect", [
    (["--workers", "0"], "0 is out of range (accepted: an integer from 1 to"),
    (["--seeds", "-1"], "-1 is out of range (accepted: an integer from 0 to 4294967295)"),
    (["--T", "2", "0"], "0 is out of range (accepted: an integer from 1 to"),
    (["--tasks", "mnist"], "invalid choice: 'mnist'"),
    (["--extra", "--sg-lr -1"], "the copy runs would reject their options"),
    (["--name", "a/b"], "is not a plain file name"),
    (["--tasks", "ptb"], "--tasks ptb needs --data-dir"),
])
def test_bad_options_are_one_line_errors(tmp_path, capsys, monkeypatch, bad, expect):
    monkeypatch.delenv("MINIDNI_DATA", raising=False)
    assert table2.main(bad + ["--out", str(tmp_path / "runs"), "--figures", str(tmp_path / "fig")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expect in err and err.startswith("python -m minidni.run table2: error:")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "fig").exists()


def test_failed_cells_are_listed_with_their_command_and_exit_1(tmp_path, capsys):
    """A cell that fails while running (here: diverges) is marked failed, the others are tabulated, exit 1."""
    argv = ["--tasks", "copy", "--modes", "bptt", "--T", "2", "3", "--seeds", "0", "--steps", "6", "--hidden", "4",
            "--batch", "2", "--workers", "2", "--executor", "processes", "--lr", "1e38", "--extra", "--clip 0",
            "--out", str(tmp_path / "runs"), "--figures", str(tmp_path / "fig")]
    assert table2.main(argv) == 1
    captured = capsys.readouterr()
    assert "2 of 2 runs failed" in captured.err
    md = (tmp_path / "fig" / "table2.md").read_text()
    assert "(1 failed)" in md and "Failed runs" in md and "`python -m minidni.run copy --mode bptt --T 2" in md
    assert "NaN or inf" in md


@pytest.mark.ray
def test_grid_on_ray_brings_every_file_back_and_resume_reuses(tmp_path, capsys):
    pytest.importorskip("ray", reason='needs the optional Ray extra: pip install -e ".[distributed]"')
    argv = [a for a in TINY if a not in ("--executor", "processes")] + [
        "--executor", "ray", "--out", str(tmp_path / "runs"), "--figures", str(tmp_path / "fig")]
    assert table2.main(argv) == 0
    cell = tmp_path / "runs" / "copy" / "dni" / "T2" / "seed0"
    assert {"summary.json", "copy_curriculum.png", "sg_diagnostics.png"} <= {
        p.name for p in cell.iterdir()}
    data = json.loads((tmp_path / "fig" / "table2.json").read_text())
    assert all(r["steps"] == 12 and r["options"]["out"].endswith(f"runs/copy/{r['mode']}/T2/seed0")  # not the worker's
               for r in data["runs"])
    assert "as ray" in capsys.readouterr().out
    assert table2.main(argv + ["--resume", "--name", "again"]) == 0
    assert all(r["reused"] for r in json.loads((tmp_path / "fig" / "again.json").read_text())["runs"])


def test_ratio_line_divides_the_mean_lengths_and_quotes_the_paper():
    modes = {"bptt": {2: {"mean": 4.0}, 3: {"mean": 0.0}, 8: {"mean": 5.0}},
             "dni": {2: {"mean": 6.0}, 3: {"mean": 5.0}, 8: {"mean": 5.0}}}
    line = table2._ratio_line("copy", modes, "dni")
    assert line == "dni / bptt length (means over seeds): T=2 1.50x (paper 2.29x), T=8 1.00x"  # T=3: BPTT solved 0
    assert table2._ratio_line("ptb", modes, "dni") is None and table2._ratio_line("copy", modes, "dni-aux") is None


def test_truth_line_averages_the_measured_cosines_per_T():
    runs = [{"task": "copy", "mode": "dni", "T": 2, "options": {"sg_truth_windows": 10},
             "diagnostics": {"mean_sg_true_cosine": c}} for c in (0.02, 0.04)]
    runs.append({"task": "copy", "mode": "bptt", "T": 2, "options": {"sg_truth_windows": 10}, "diagnostics": {}})
    assert table2._truth_line("copy", runs, "dni") == ("dni: cos(SG, true gradient of the next 10 windows), "
                                                       "mean over log points and seeds: T=2 0.030")
    assert table2._truth_line("copy", runs, "bptt") is None and table2._truth_line("repeat-copy", runs, "dni") is None
