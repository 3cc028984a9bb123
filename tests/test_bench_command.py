"""bench command: the copy command's loop against the bare trainer, side by side (a smoke test, not a timing)."""

import json

from minidni.bench import command


def test_command_bench_writes_both_setups_per_mode(tmp_path, capsys):
    out = tmp_path / "bench_command.json"
    argv = ["--modes", "bptt", "dni", "--hidden", "8", "--batch", "4", "--steps", "20", "--rounds", "1",
            "--log-every", "10", "--checkpoint-every", "20", "--out", str(out)]
    assert command.main(argv) == 0
    result = json.loads(out.read_text())
    assert [r["mode"] for r in result["runs"]] == ["bptt", "dni"]
    for r in result["runs"]:
        assert all(len(v) == 1 and v[0] > 0 for v in r["samples"].values())
        assert r["command_over_bare"] == r["command_seconds_per_window"] / r["bare_seconds_per_window"] - 1
    assert result["machine"]["blas"] and result["config"]["log_every"] == 10
    assert "overhead" in capsys.readouterr().out
