"""Calibration command: one BPTT grid per protocol, ranked by distance to the paper's BPTT column."""

import json
import math

from minidni.experiments import calibrate, table2

TINY = ["--tasks", "copy", "--T", "2", "3", "--seeds", "0", "--steps", "12", "--hidden", "4", "--batch", "2",
        "--phases", "aligned", "--units", "episode", "bit", "--workers", "2", "--executor", "processes"]


def test_distance_is_the_mean_log2_factor_off_the_paper():
    paper = {"copy": {2: 8, 3: 4}}
    assert calibrate.distance({"copy": {2: 4.0, 3: 8.0}}, paper) == 1.0  # half and twice: 1 each
    assert calibrate.distance({"copy": {2: 8.0, 3: math.nan}}, paper) == 0.0  # a missing cell does not count
    assert calibrate.distance({"copy": {2: 0.0}}, {"copy": {2: 3}}) == 0.0  # 0 (nothing solved) counts as 3
    assert math.isnan(calibrate.distance({}, paper))


def test_every_protocol_runs_bptt_only_and_the_table_ranks_them(tmp_path, capsys):
    argv = TINY + ["--out", str(tmp_path / "runs"), "--figures", str(tmp_path / "fig")]
    assert calibrate.main(argv) == 0
    md = (tmp_path / "fig" / "table2_calibration.md").read_text()
    data = json.loads((tmp_path / "fig" / "table2_calibration.json").read_text())
    assert set(data["protocols"]) == {"aligned, episode", "aligned, bit"}
    for key, r in data["protocols"].items():
        phase, unit = key.split(", ")
        summary = json.loads((tmp_path / "runs" / f"{phase}-{unit}" / "copy" / "bptt" / "T3" / "seed0"
                              / "summary.json").read_text())
        assert summary["options"]["phase"] == phase and summary["options"]["curriculum_unit"] == unit
        assert summary["options"]["mode"] == "bptt" and summary["steps"] == 12
        means = {"copy": {int(T): e["mean"] for T, e in r["lengths"]["copy"].items()}}
        assert r["distance"] == calibrate.distance(means, {"copy": table2.PAPER["copy"]["bptt"]})
    assert "| aligned, episode |" in md and "| aligned, bit |" in md and "(7)" in md and "(8)" in md
    assert all(r["run_seconds"] > 0 for r in data["protocols"].values()) and "min of run time summed over the runs" in md
    assert "Closest to the paper: **" in md and "--curriculum-unit" in md
    assert not (tmp_path / "runs" / "aligned-step").exists()  # only the protocols asked for
    capsys.readouterr()
    assert calibrate.main(argv + ["--resume"]) == 0  # everything reused
    assert capsys.readouterr().out.count("(reused)") == 4


def test_a_T_the_paper_has_no_bptt_length_for_is_one_line(tmp_path, capsys):
    assert calibrate.main(["--T", "7", "--out", str(tmp_path / "o"), "--figures", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--T 7" in err[0] and "2, 3, 4, 5" in err[0]
