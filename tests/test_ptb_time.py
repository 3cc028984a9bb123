"""ptb-time: finished PTB runs compared by the training time to reach a reference validation BPC."""

import json

from minidni.experiments import ptb_time


def _run(folder, mode, T, evals, steps):
    folder.mkdir(parents=True)
    summary = {"task": "ptb", "mode": mode, "T": T, "steps": steps, "steps_per_second": 100.0,
               "train_seconds": evals[-1][1], "valid_bpc": min(v for _, _, v in evals), "test_bpc": 2.0,
               "options": {"hidden": 8, "batch": 4, "sg_scale": 0.1},
               "evals": [{"step": s, "train_seconds": t, "valid_bpc": v} for s, t, v in evals]}
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def test_time_to_reach_the_reference_and_the_files(tmp_path, capsys):
    ref = _run(tmp_path / "bptt", "bptt", 40, [(100, 10.0, 2.5), (200, 20.0, 2.2), (300, 30.0, 2.1)], 300)
    dni = _run(tmp_path / "dni", "dni", 8, [(500, 5.0, 2.4), (1000, 12.0, 2.05), (1500, 18.0, 2.0)], 1500)
    slow = _run(tmp_path / "slow", "bptt", 8, [(500, 6.0, 2.9)], 500)
    assert ptb_time.time_to_reach(json.loads((dni / "summary.json").read_text())["evals"], 2.1) == 12.0
    assert ptb_time.main([str(ref), str(dni), str(slow), "--figures", str(tmp_path / "fig")]) == 0
    md = (tmp_path / "fig" / "ptb_time.md").read_text()
    assert "best validation BPC of **bptt T=40 (H=8, B=4)**, 2.100" in md and "--figures" in md
    assert "| dni T=8 (H=8, B=4, sg-scale 0.1) | 1500 | 48,000 |" in md and "| 12 | 2.50x as fast |" in md
    assert "| not reached | – |" in md and (tmp_path / "fig" / "ptb_time.png").stat().st_size > 1000


def test_a_folder_without_a_ptb_run_or_a_bad_reference_is_one_line(tmp_path, capsys):
    ref = _run(tmp_path / "bptt", "bptt", 40, [(100, 10.0, 2.5)], 100)
    assert ptb_time.main([str(tmp_path / "nothing"), "--figures", str(tmp_path / "f")]) == 2
    assert ptb_time.main([str(ref), "--reference", "1", "--figures", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "holds no finished ptb run" in err[0] and "--reference 1" in err[1]
