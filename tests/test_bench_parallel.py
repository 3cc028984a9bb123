"""Smoke test of ``python -m minidni.bench parallel`` at tiny sizes (JSON keys, figure, bad options); no timing.

One pipeline size (K=2: four worker processes) keeps it short: starting Ray and
each worker takes seconds, many more on a loaded machine.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from minidni.bench import parallel
from minidni.bench.parallel import Config, layer_costs, main, module_cut

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                reason='needs the optional Ray extra: pip install -e ".[distributed]"')


def test_module_cut_counts_the_synthesizer_in_the_module_below():
    costs = [4.0, 4.0, 4.0, 4.0]
    assert module_cut(costs, 2, 0.0) == [(0, 2), (2, 4)]
    assert module_cut(costs, 2, 5.0) == [(0, 1), (1, 4)]  # 4 + 5 below, 12 above: the best largest group
    assert module_cut(costs, 1, 5.0) == [(0, 4)]
    assert layer_costs(2, 8) == [784.0 * 8, 8.0 * 8 + 80]


class Clock:
    """A stand-in for the ``time`` module: seconds pass only when a stand-in pipeline says so."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now

    time = perf_counter


class SlowToFillPipe:
    """A stand-in pipeline on ``clock``: its first two minibatches take 50 ms each, the others 5 ms; window 3."""

    def __init__(self, clock):
        self.clock, self.sent = clock, []

    def submit(self, step, rows):
        self.clock.now += 0.05 if step <= 2 else 0.005
        self.sent.append(step)
        return [self._info(self.sent.pop(0))] if len(self.sent) > 2 else []

    def drain(self):
        done, self.sent = [self._info(s) for s in self.sent], []
        return done

    def calls(self, since):
        return [[]]

    @staticmethod
    def _info(step):
        return {"step": step, "loss": 0.0, "sg_loss": {}, "input_loss": {}}


def test_steady_throughput_leaves_out_the_fill_of_a_round(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(parallel, "time", clock)
    config = Config("decoupled", "cdni", 2, None, SlowToFillPipe(clock), batch=8)
    config.train(12, (np.zeros((40, 3)), np.zeros(40, int)), 0, {})
    (row,) = config.rounds
    # 12 steps in 2 * 0.05 + 10 * 0.005 s; step 1 comes back at step 3 (0.105 s), the other 11 in the 0.045 s after
    assert row["examples_per_second"] == pytest.approx(12 * 8 / 0.15)
    assert row["steady_examples_per_second"] == pytest.approx(11 * 8 / 0.045)


@pytest.mark.parametrize("options, message", [
    (["--layers", "2", "--workers", "3"], "--modules 3 is more than --layers 2"),
    (["--rounds", "1"], "--rounds 1: the first round is a warm-up left out of the figures"),
    (["--sweep-rounds", "1"], "--sweep-rounds 1: the first round is a warm-up"),
])
def test_bad_options_exit_2_with_one_line_before_ray_starts(options, message, capsys, tmp_path):
    assert main(["--synthetic", *options, "--out", str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "(accepted: " in err
    assert not (tmp_path / "b.json").exists()


def test_a_diverged_run_writes_no_results(capsys, tmp_path):
    out = tmp_path / "bench.json"
    argv = ["--synthetic", "--layers", "2", "--width", "8", "--batch", "8", "--workers", "2", "--lr", "1e308",
            "--rounds", "2", "--steps", "2", "--test-examples", "10", "--widths", "--quiet", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    ours = [line for line in err.splitlines() if line.startswith("python -m minidni.bench parallel")]  # (and Ray's log)
    assert len(ours) == 1 and "error: single bprop: " in ours[0] and "nothing was written" in ours[0]
    assert not out.exists() and not out.with_suffix(".png").exists()


def test_tiny_run_writes_json_and_figure(capsys, tmp_path):
    out = tmp_path / "bench.json"
    argv = ["--synthetic", "--layers", "3", "--width", "16", "--batch", "8", "--workers", "2",
            "--rounds", "2", "--steps", "3", "--test-examples", "20", "--widths", "8",
            "--sweep-rounds", "2", "--sweep-steps", "2", "--quiet", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    data = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 0
    env = data["environment"]
    assert env["cpu_count"] >= 1 and len(env["load_average_at_start"]) == 3 and env["ray"] and env["numpy"]
    assert env["command"] == "python -m minidni.bench parallel " + " ".join(argv)
    names = [r["name"] for r in data["configs"]]
    assert names == ["single bprop", "single cdni", "locked bprop K=2", "decoupled cdni K=2"]
    rows = {r["name"]: r for r in data["configs"]}
    for r in rows.values():
        assert r["steps"] == 6 and r["examples_per_second"] > 0 and r["steady_examples_per_second"] > 0
        assert len(r["curve"]) == 3
        assert 0 <= r["test_error_at_equal_time"] <= 100 and len(r["rounds"]) == 2
    assert rows["single bprop"]["worker_busy_fraction_mean"] is None
    assert all(0 <= b <= 1.5 for b in rows["locked bprop K=2"]["worker_busy_fraction_mean"])  # 2 workers
    two = rows["decoupled cdni K=2"]
    assert two["ratio_to_locked_same_k"]["rounds"] == 1 and two["groups"] == [[0, 1], [1, 2]]
    assert two["steady_ratio_to_locked_same_k"]["rounds"] == 1
    sg = two["stages"][0]["staleness"]["sg"]
    assert sg["count"] == 6 and sum(sg["histogram"].values()) == 6
    assert data["model"]["modules"] == 2 and data["staleness_effect"][-1]["steps"] == 6
    (sweep,) = data["width_sweep"]
    assert sweep["width"] == 8 and set(sweep["examples_per_second"]) == {"single bprop", "locked bprop K=2",
                                                                           "decoupled cdni K=2"}
