"""The two-clock system on two Ray workers: in lock-step it equals the single-process trainer; decoupled,
A runs ahead and every SG fit still arrives."""

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the worker tests need the distributed extra (Ray)")

import json  # noqa: E402

from minidni.dni.multinet import MODES, TwoClockTrainer  # noqa: E402
from minidni.experiments.multinet import main  # noqa: E402
from minidni.experiments.multinet_workers import train_on_workers  # noqa: E402
from minidni.tasks.odd_digits import OddDigitStream  # noqa: E402

pytestmark = pytest.mark.ray
D, B, T, PERIODS = 5, 4, 3, 3
OPTIONS = dict(input_dim=D, T=T, embed=6, fast_hidden=5, slow_hidden=4, message=3, lr=1e-2, clip=1.0,
               dtype=np.float64)


@pytest.fixture(scope="module")
def ray_session():
    from minidni.distributed import init_ray

    started = init_ray(num_cpus=2)
    yield
    if started:
        ray.shutdown()


def _stream():
    rng = np.random.default_rng(0)
    return OddDigitStream(rng.standard_normal((40, D)), rng.integers(0, 10, 40), B, T, rng=np.random.default_rng(1))


@pytest.mark.parametrize("mode", MODES)
def test_workers_in_lockstep_equal_one_process(mode, ray_session):
    options = {**OPTIONS, "mode": mode}
    result = train_on_workers(options, 7, _stream(), PERIODS, lockstep=True)
    one = TwoClockTrainer(**options, rng=np.random.default_rng(7))
    stream = _stream()
    for _ in range(PERIODS):
        one.train_period(stream.next_period())
    for name, params in (("fast", one.fast_params), ("slow", one.slow_params)):
        for k, v in params.items():
            np.testing.assert_allclose(result[name]["params"][k], v, rtol=1e-12, atol=1e-15, err_msg=f"{name}.{k}")
    assert (result["fast"]["updates"], result["slow"]["updates"]) == (one.fast_updates, one.slow_updates)
    assert one.fast_updates == (PERIODS if mode == "locked" else T * PERIODS) and one.slow_updates == PERIODS


def test_decoupled_workers_train_and_apply_every_sg_fit(ray_session):
    options = {**OPTIONS, "mode": "dni"}
    result = train_on_workers(options, 7, _stream(), PERIODS, ahead=2)
    assert (result["fast"]["updates"], result["slow"]["updates"]) == (T * PERIODS, PERIODS)
    assert result["fast"]["waiting_fits"] == 0 and result["fast"]["sg_fits"] == T * PERIODS  # every fit arrived
    assert result["seconds"] > 0


def test_command_on_two_workers(tmp_path, ray_session):
    argv = ["--digits", "standin", "--T", "2", "--batch", "4", "--embed", "8", "--fast-hidden", "8", "--slow-hidden", "8",
            "--message", "4", "--eval-periods", "1", "--eval-batch", "16", "--no-progress", "--steps", "16",
            "--eval-every", "16", "--workers", "2", "--modes", "locked,dni", "--out", str(tmp_path)]
    assert main(argv) == 0
    runs = json.loads((tmp_path / "compare.json").read_text())
    assert [(r["mode"], r["workers"], r["fast_updates"], r["slow_updates"]) for r in runs] == [
        ("locked", 2, 4, 4), ("dni", 2, 8, 4)]
    assert all(r["train_seconds"] > 0 and 0 <= r["slow_accuracy"] <= 100 for r in runs)
    assert all(r["worker_cpu_seconds"]["fast"] > 0 and r["worker_cpu_seconds"]["slow"] > 0 for r in runs)
    assert "| locked | 0 | 4 | 4 |" in (tmp_path / "table.md").read_text()
