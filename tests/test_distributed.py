"""Pipelines of Ray workers: same parameters as one process in lock-step, locked bprop, staleness, the complete
unlock without deadlock, synthesizers at the cuts, failures, checkpoints, GPU placement, the command line.

The stage logic is checked in-process first (no Ray); the Ray tests share ONE
local Ray instance (module fixture, 2 CPUs and 2 FAKE GPUs: Ray only counts
them, nothing runs on a GPU) and skip with a reason without Ray. Every
comparison of two runs compares like with like: both in float64, or both in
workers with one BLAS thread (several BLAS threads sum in another order).
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import re
import socket
import sys
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minidni import backend, models
from minidni.cli import UsageError, run_command
from minidni.distributed import pipeline as pipeline_module
from minidni.distributed.batches import batch_indices
from minidni.distributed.pipeline import (RAY_MISSING, Pipeline, balanced_groups, check_reachable, make_stages,
                                          spawn_workers)
from minidni.distributed.state import on_backend, pack, trainer_state
from minidni.distributed.worker import StageWorker
from minidni.dni.feedforward import build_trainer
from minidni.experiments.feedforward import DATASETS, Dataset, _model, make_parser
from minidni.experiments.pipeline import CHECKPOINT, add_pipeline_args, run_pipeline, trainer_at_cuts
from minidni.io import load_checkpoint

HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason='needs the optional Ray extra: pip install -e ".[distributed]"')
D, N = 12, 8


def make_trainer(method, *, layers=3, **kw):
    nets = models.fcn(layers, in_dim=D, width=16, rng=np.random.default_rng(0), dtype=np.float64)
    return build_trainer(nets, method=method, in_shape=(D,), lr=1e-2, sg_width=16, sg_hidden=1,
                         rng=np.random.default_rng(1), dtype=np.float64, **kw)


def batches(count, seed=5):
    rng = np.random.default_rng(seed)
    return [(rng.random((N, D)), rng.integers(0, 10, N)) for _ in range(count)]


def single_process_state(method, data, **kw):
    trainer = make_trainer(method, **kw)
    for x, y in data:
        trainer.step(x, y)
    return trainer_state(trainer)


def assert_same_state(got, want, rtol=1e-12):
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=rtol, atol=1e-15, err_msg=k)


# ---------------------------------------------------------------- no Ray needed
@given(costs=st.lists(st.integers(1, 50), min_size=1, max_size=7), cut=st.integers(0, 30), data=st.data())
def test_balanced_groups_are_an_optimal_contiguous_cut(costs, cut, data):
    k = data.draw(st.integers(1, len(costs)))
    cut_costs = [cut * (i % 2 + 1) for i in range(len(costs) - 1)]  # what the group below each cut also pays
    groups = balanced_groups(costs, k, cut_costs=cut_costs)
    assert groups[0][0] == 0 and groups[-1][1] == len(costs) and len(groups) == k
    assert all(a < b for a, b in groups) and all(b == c for (_, b), (c, _) in zip(groups, groups[1:]))

    def largest(bounds):
        return max(sum(costs[a:b]) + (cut_costs[b - 1] if b < len(costs) else 0) for a, b in bounds)

    best = min(largest(list(zip((0, *cuts), (*cuts, len(costs)))))
               for cuts in itertools.combinations(range(1, len(costs)), k - 1))
    assert largest(groups) == best


def test_balanced_groups_rejects_more_workers_than_modules():
    with pytest.raises(ValueError, match="cannot cut 3 modules into 4 groups"):
        balanced_groups([1, 2, 3], 4)


def test_trainer_at_cuts_puts_one_synthesizer_per_cut_and_backprop_inside_a_worker():
    def fresh_nets():  # (a trainer flattens its modules' params: each cut gets layers of its own)
        return models.fcn(5, in_dim=D, width=16, rng=np.random.default_rng(0), dtype=np.float64)

    def make(module_nets):
        return build_trainer(module_nets, method="cdni", in_shape=(D,), lr=1e-2, sg_width=16,
                             rng=np.random.default_rng(1), dtype=np.float64)

    trainer, groups = trainer_at_cuts(fresh_nets(), workers=2, make=make)
    assert groups == [(0, 3), (3, 5)]  # layer 0 (12 -> 16) is the cheapest: three layers below the cut
    assert len(trainer.modules) == 2 and len(trainer.synthesizers) == 1
    assert [len(m.net.layers) for m in trainer.modules] == [9, 7]  # (Linear, BN, ReLU) x 3; x 2 + output Linear
    _, heavy_sg = trainer_at_cuts(fresh_nets(), workers=2, make=make, cut_cost=lambda ns: [1e6] * (len(ns) - 1))
    assert heavy_sg == [(0, 1), (1, 5)]  # a costly synthesizer moves the cut down: its worker does less else


def test_the_command_builds_synthesizers_at_the_cuts_unless_asked_for_every_layer():
    from minidni.experiments.pipeline import _build, _interfaces_info

    parser = make_parser("mnist")
    add_pipeline_args(parser)
    for extra, synthesizers, modules in (([], 1, 2), (["--interfaces", "every-layer"], 3, 4)):
        args = parser.parse_args(["--layers", "4", "--width", "16", "--sg-width", "16", "--method", "cdni",
                                  "--workers", "2", *extra])
        trainer, in_shape, groups, layer_groups = _build(args, lambda rng: _model(args, DATASETS["mnist"], rng))
        assert in_shape == (784,) and len(trainer.synthesizers) == synthesizers and len(trainer.modules) == modules
        assert len(groups) == 2 and layer_groups[-1][1] == 4
        info = _interfaces_info(args, layer_groups)
        assert info["cuts_after_layers"] == [layer_groups[0][1]]
        assert len(info["synthesizers_after_layers"]) == synthesizers


def run_stages_in_process(trainer, groups, data, *, delay=0, top_first=False):
    """The pipeline's message order by hand; SG targets delivered ``delay`` steps late. ``top_first`` (complete
    unlock only): the stages run from the top down, so every SG target arrives BEFORE its prediction."""
    stages = make_stages(trainer, groups)
    late = []
    for step, (x, y) in enumerate(data, start=1):
        h = x
        for g in (reversed if top_first else list)(range(len(stages))):
            h, d_in, _ = stages[g].dni_step(step, h, x, y)
            if d_in is not None:
                late.append((step, g - 1, d_in))
            if stages[g].input_models is not None and h is not None:
                stages[g + 1].fit_input_target(step, h)  # before the stage above predicts: waits in early_input
            if top_first:
                while late:
                    s, g_below, d = late.pop(0)
                    stages[g_below].fit_sg_target(s, d)  # before stage g_below predicts: waits in early_sg
        while late and late[0][0] <= step - delay:
            s, g, d = late.pop(0)
            stages[g].fit_sg_target(s, d)
    for s, g, d in late:
        stages[g].fit_sg_target(s, d)
    return stages


@pytest.mark.parametrize("method, kw, groups, top_first", [
    ("dni", {}, [(0, 1), (1, 3)], False),
    ("cdni", {"warmup": 2}, [(0, 2), (2, 3)], False),
    ("dni", {"unlock_forward": True, "warmup": 2}, [(0, 1), (1, 2), (2, 3)], False),
    ("cdni", {"unlock_forward": True}, [(0, 1), (1, 2), (2, 3)], True),
])
def test_stages_in_single_process_order_reproduce_the_trainer(method, kw, groups, top_first):
    data = batches(5)
    stages = run_stages_in_process(make_trainer(method, **kw), groups, data, top_first=top_first)
    state = {k: v for s in stages for k, v in s.state_dict().items()}
    assert_same_state(state, single_process_state(method, data, **kw), rtol=0)
    assert all(v == 0 for s in stages for values in s.staleness.values() for v in values)
    assert sum(len(s.staleness["sg"]) for s in stages) == 5 * (len(groups) - 1)  # every target was fitted


def test_late_targets_are_recorded_as_staleness_and_change_the_result():
    data = batches(5)
    stages = run_stages_in_process(make_trainer("dni"), [(0, 1), (1, 3)], data, delay=1)
    assert stages[0].staleness["sg"] == [1, 1, 1, 1, 0]  # the last target is delivered after the loop
    assert not stages[0].pending_sg and stages[0].in_flight() == 0
    state = {k: v for s in stages for k, v in s.state_dict().items()}
    want = single_process_state("dni", data)
    assert not np.allclose(state["m0.0.W"], want["m0.0.W"])  # stale targets train another synthesizer


def test_a_late_target_is_fitted_on_a_prediction_with_the_synthesizers_current_weights(monkeypatch):
    stages = make_stages(make_trainer("dni"), [(0, 1), (1, 3)])
    sg = stages[0].synthesizers[-1]
    fitted = []
    fit = sg.fit
    monkeypatch.setattr(sg, "fit", lambda cache, target: (fitted.append(cache[1].copy()), fit(cache, target))[1])
    targets = []
    for step, (x, y) in enumerate(batches(3), start=1):  # three steps, no target delivered yet
        h, _, _ = stages[0].dni_step(step, x, x, y)
        targets.append(stages[1].dni_step(step, h, x, y)[1])
    used_at_step_3, _, _, h3, y3 = stages[0].pending_sg[3]
    stages[0].fit_sg_target(1, targets[0])  # S has not changed since step 1: its own prediction is fitted
    np.testing.assert_array_equal(fitted[0], 0.0)  # zero-initialised final layer
    stages[0].fit_sg_target(2, targets[1])  # (a non-zero target: S changes)
    fresh = sg.predict(h3, y3)[1][1]  # the raw network output its cache keeps
    stages[0].fit_sg_target(3, targets[2])  # S was fitted after predicting for step 3: predicted anew
    np.testing.assert_allclose(fitted[2], fresh, rtol=1e-12)
    assert not np.allclose(fitted[2], used_at_step_3[1])  # (the module used the old prediction)
    assert stages[0].staleness["sg"] == [2, 1, 0]


def test_state_dict_refuses_while_minibatches_are_in_flight():
    stage = make_stages(make_trainer("dni"), [(0, 1), (1, 3)])[0]
    x, y = batches(1)[0]
    stage.dni_step(1, x, None, y)
    with pytest.raises(RuntimeError, match="1 minibatches in flight"):
        stage.state_dict()


def test_on_backend_copies_every_array_and_keeps_shared_arrays_and_flat_views_shared():
    stage = make_stages(make_trainer("cdni"), [(0, 2), (2, 3)])[1]  # the top: it trains on the true loss
    moved = on_backend(stage, np)
    module, original = moved.modules[0], stage.modules[0]
    flat = module.optimizer.flat.params.buffers[0]
    for key, param in module.net.params.items():
        assert param is module.optimizer.params[key]  # the optimiser still updates the layer's own array
        assert param is not original.net.params[key] and np.array_equal(param, original.net.params[key])
        assert np.shares_memory(param, flat)  # still a view of the flat buffer the fused step updates
    h, y = np.random.default_rng(3).random((N, 16)), np.arange(N) % 10
    before = original.net.params["0.W"].copy()
    moved.dni_step(1, h, None, y)
    assert np.array_equal(original.net.params["0.W"], before)  # the original is untouched
    stage.dni_step(1, h, None, y)
    assert not np.array_equal(original.net.params["0.W"], before)  # and trains like the copy did:
    assert_same_state(moved.state_dict(), stage.state_dict(), rtol=0)


def test_a_worker_sent_rows_without_held_data_says_so():
    worker = StageWorker()
    worker.setup(pack(make_stages(make_trainer("dni"), [(0, 1), (1, 3)])[0]), 0)
    with pytest.raises(RuntimeError, match="sent rows, but this worker holds no data"):
        worker.dni_steps([1], None, None, None, [np.arange(N)], [])


def test_batch_indices_are_a_fixed_function_of_the_step():
    cache = {}
    a = [batch_indices(s, n=20, batch=6, seed=3, cache=cache) for s in range(1, 8)]
    b = [batch_indices(s, n=20, batch=6, seed=3) for s in range(1, 8)]
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert len(set(np.concatenate(a[:3]).tolist())) == 18  # an epoch (3 batches) has no repeats


def tiny_data(n_train=96, n_test=40, seed=0):
    rng = np.random.default_rng(seed)
    return Dataset(rng.random((n_train, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n_train),
                   rng.random((n_test, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n_test))


def cli(argv, data, capsys):
    """The mnist command's pipeline path with ``data`` injected (no data files); returns (rc, stdout, stderr)."""
    parser = make_parser("mnist")
    add_pipeline_args(parser)
    args = parser.parse_args(["--no-progress", "--layers", "3", "--width", "32", "--sg-width", "32",
                              "--batch", "16", "--lr", "1e-3", "--log-every", "5", *argv])
    model = lambda rng: _model(args, DATASETS["mnist"], rng)  # noqa: E731
    rc = run_command(parser.prog, lambda: run_pipeline(args, data, dataset="mnist", model=model) and 0)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_without_ray_workers_give_a_one_line_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    rc, _, err = cli(["--workers", "2", "--out", str(tmp_path)], tiny_data(), capsys)
    assert rc == 2 and err.strip() == f"python -m minidni.run mnist: error: {RAY_MISSING}"


# ---------------------------------------------------------------- an unreachable --ray-address
@needs_ray
@pytest.mark.parametrize("kind", ["refused", "unknown host", "open port, not Ray"])
def test_an_unreachable_ray_address_fails_within_its_timeout_naming_it(kind):
    import ray._raylet  # noqa: F401  (imported before the clock starts: the first import takes seconds)

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    address = {"refused": "127.0.0.1:1", "unknown host": "nohost.invalid:6379",
               "open port, not Ray": f"127.0.0.1:{listener.getsockname()[1]}"}[kind]
    start = time.monotonic()
    with pytest.raises(UsageError) as info:
        check_reachable(address, timeout=2.0)
    listener.close()
    assert time.monotonic() - start < 2.0 + 1.0  # (a thread left connecting does not delay the error)
    message = str(info.value)
    assert len(message.splitlines()) == 1 and message.startswith(f"--ray-address {address}: no Ray head answered")
    assert "--ray-timeout 2" in message


def test_the_command_fails_in_one_line_on_an_unreachable_ray_address(capsys, tmp_path):
    if not HAVE_RAY:
        pytest.skip('needs the optional Ray extra: pip install -e ".[distributed]"')
    rc, _, err = cli(["--workers", "2", "--ray-address", "127.0.0.1:1", "--ray-timeout", "3",
                      "--out", str(tmp_path)], tiny_data(), capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "--ray-address 127.0.0.1:1: no Ray head" in err


# ---------------------------------------------------------------- Ray
@pytest.fixture(scope="module")
def ray_instance():
    if not HAVE_RAY:
        pytest.skip('needs the optional Ray extra: pip install -e ".[distributed]"')
    import ray

    # num_gpus=2 only declares two GPUs to Ray's scheduler (there is none here): placement can be tested
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()


@needs_ray
@pytest.mark.ray
class TestPipeline:
    """Pipelines on three reused worker processes (starting a process takes seconds)."""

    @pytest.fixture(scope="class")
    @classmethod
    def pool(cls, ray_instance):
        actors = spawn_workers(3, cpus_per_worker=0.5)
        yield actors
        for actor in actors:
            ray_instance.kill(actor)

    @pytest.mark.parametrize("method, kw, workers", [
        ("dni", {}, 3),
        ("cdni", {"unlock_forward": True, "warmup": 2}, 2),
    ])
    def test_lockstep_pipeline_equals_single_process_dni(self, pool, method, kw, workers):
        data = batches(5)
        with Pipeline(make_trainer(method, **kw), workers=workers, lockstep=True, actors=pool[:workers]) as pipe:
            for step, (x, y) in enumerate(data, start=1):
                done = pipe.submit(step, x, y)
                assert [d["step"] for d in done] == [step] and np.isfinite(done[0]["loss"])
            state = pipe.state_dict()
            report = pipe.report()
        assert_same_state(state, single_process_state(method, data, **kw))
        assert all(r["placement"]["blas_threads"]["OPENBLAS_NUM_THREADS"] == "1" for r in report)
        assert all(s["max"] == 0 for r in report for s in r["staleness"].values())

    @pytest.mark.parametrize("method, kw, workers, lockstep", [
        ("dni", {}, 3, True),
        ("cdni", {"unlock_forward": True, "warmup": 2}, 2, True),  # every worker takes the images from its rows
        ("bprop", {}, 2, False),
    ])
    def test_rows_of_the_held_data_train_exactly_as_the_arrays_they_index(self, pool, ray_instance, method, kw,
                                                                         workers, lockstep):
        rng = np.random.default_rng(3)
        x_train, y_train = rng.random((5 * N, D)), rng.integers(0, 10, 5 * N)
        rows = [batch_indices(step, n=len(x_train), batch=N, seed=4) for step in range(1, 7)]
        data = (x_train, y_train) if method != "dni" else tuple(ray_instance.put(a) for a in (x_train, y_train))
        with Pipeline(make_trainer(method, **kw), workers=workers, lockstep=lockstep, actors=pool[:workers],
                      data=data) as pipe:  # dni: the data given as object-store references
            done = [d for step, r in enumerate(rows, start=1) for d in pipe.submit(step, rows=r)] + pipe.drain()
            state = pipe.state_dict()
        assert [d["step"] for d in done] == list(range(1, 7))
        assert_same_state(state, single_process_state(method, [(x_train[r], y_train[r]) for r in rows], **kw))

    def test_submit_takes_rows_only_with_data_and_only_rows_inside_it(self, pool):
        x, y = batches(1)[0]
        with Pipeline(make_trainer("dni"), workers=2, actors=pool[:2]) as pipe:
            with pytest.raises(ValueError, match="rows= when the pipeline was given data=; got rows with data not"):
                pipe.submit(1, rows=np.arange(N))
        with pytest.raises(ValueError, match="data: x has 8 rows but y has 7"):
            Pipeline(make_trainer("dni"), workers=2, actors=pool[:2], data=(x, y[:-1]))
        with Pipeline(make_trainer("dni"), workers=2, actors=pool[:2], data=(x, y)) as pipe:
            with pytest.raises(ValueError, match="got x, y with data given"):
                pipe.submit(1, x, y)
            with pytest.raises(ValueError, match="got x, y, rows with data given"):
                pipe.submit(1, x, y, rows=np.arange(N))
            for bad in (np.arange(1, N + 1), np.arange(N, dtype=float), np.zeros((2, 2), int), np.arange(0)):
                with pytest.raises(ValueError, match=r"rows must be a non-empty 1-D array of indices 0\.\.7"):
                    pipe.submit(1, rows=bad)
            assert pipe.submit(1, rows=np.arange(N)) == [] and [d["step"] for d in pipe.drain()] == [1]

    @pytest.mark.parametrize("kw, match", [({"steps_per_call": 0}, "steps_per_call must be 'auto' or a whole number"),
                                           ({"steps_per_call": 4, "window": 3}, "at least steps_per_call = 4")])
    def test_bad_steps_per_call_or_window_is_refused(self, pool, kw, match):
        with pytest.raises(ValueError, match=match):
            Pipeline(make_trainer("dni"), workers=2, actors=pool[:2], **kw)

    @pytest.mark.parametrize("call_seconds, window, chosen",
                             [(1e3, None, pipeline_module.MAX_STEPS_PER_CALL), (1e3, 3, 3), (1e-9, None, 1)])
    def test_auto_steps_per_call_is_chosen_from_the_timed_probe_steps(self, pool, monkeypatch, call_seconds,
                                                                      window, chosen):
        """CALL_SECONDS far above or below any step's time: the cap (or the window), or one per call."""
        monkeypatch.setattr(pipeline_module, "CALL_SECONDS", call_seconds)
        data = batches(20)
        with Pipeline(make_trainer("dni"), workers=2, window=window, actors=pool[:2]) as pipe:
            assert pipe.steps_per_call == 1 and pipe.steps_per_call_choice is None  # until step 8 is back
            done = [d for step, (x, y) in enumerate(data, start=1) for d in pipe.submit(step, x, y)]
            done += pipe.drain()
        assert pipe.steps_per_call == chosen and pipe.window == (window or 3 * chosen)
        assert pipe.steps_per_call_choice["probe_steps"] == 5 and pipe.steps_per_call_choice["steps_per_call"] == chosen
        assert [d["step"] for d in done] == list(range(1, 21))
        assert all(set(d["seconds"]) == {0, 1} and min(d["seconds"].values()) > 0 for d in done)

    def test_locked_pipeline_makes_its_calls_one_minibatch_at_a_time(self, pool):
        with Pipeline(make_trainer("bprop"), workers=2, steps_per_call=4, actors=pool[:2]) as pipe:
            assert pipe.steps_per_call == 1 and pipe.window == 3

    def test_locked_pipeline_equals_single_process_bprop_and_shows_the_backward_lock(self, pool):
        data = batches(6)
        with Pipeline(make_trainer("bprop"), workers=2, window=3, actors=pool[:2]) as pipe:
            losses = [d["loss"] for step, (x, y) in enumerate(data, start=1) for d in pipe.submit(step, x, y)]
            losses += [d["loss"] for d in pipe.drain()]
            state = pipe.state_dict()
            bottom = pipe.report()[0]["timing"]
        assert len(losses) == 6
        assert_same_state(state, single_process_state("bprop", data))
        # the lower worker waited for the upper one's forward and backward before every update
        assert bottom["steps"] == 6 and bottom["backward_wait_mean"] > 0 and bottom["update_delay_mean"] > 0

    @pytest.mark.parametrize("per_call", [1, 3])
    def test_decoupled_pipeline_runs_ahead_and_records_staleness(self, pool, per_call):
        data = batches(12)
        with Pipeline(make_trainer("dni"), workers=2, window=3 + per_call, steps_per_call=per_call,
                      actors=pool[:2]) as pipe:
            assert pipe.steps_per_call == per_call
            done = [d for step, (x, y) in enumerate(data, start=1) for d in pipe.submit(step, x, y)]
            assert len(done) == 12 - 3  # room for the next call: at most window - per_call in flight between calls
            done += pipe.drain()
            err = pipe.error_percent(*batches(1, seed=9)[0])
            report = pipe.report()
        assert [d["step"] for d in done] == list(range(1, 13)) and all(np.isfinite(d["loss"]) for d in done)
        sg = report[0]["staleness"]["sg"]
        assert sg["count"] == 12 and sum(sg["histogram"].values()) == 12 and sg["max"] >= 0
        assert 0.0 <= err <= 100.0 and report[1]["updates"] == 12

    @pytest.mark.parametrize("per_call", [1, 3])
    @pytest.mark.parametrize("workers", [2, 3])
    def test_complete_unlock_decoupled_cannot_deadlock(self, pool, workers, per_call):
        """Messages both ways (SG targets down, input targets up), no lock-step, a drain every 4 steps (so a
        call of 3 minibatches is cut short by it). A stalled pipeline raises PipelineStalled after 60 s of no
        progress (this test then fails instead of hanging)."""
        data = batches(12)
        with Pipeline(make_trainer("cdni", unlock_forward=True), workers=workers, window=workers + 2,
                      steps_per_call=per_call, timeout=60, actors=pool[:workers]) as pipe:
            done = []
            for step, (x, y) in enumerate(data, start=1):
                done += pipe.submit(step, x, y)
                if step % 4 == 0:
                    done += pipe.drain()  # raises if a message is still in flight afterwards
            state = pipe.state_dict()
            report = pipe.report()
        assert [d["step"] for d in done] == list(range(1, 13)) and all(np.isfinite(d["loss"]) for d in done)
        for g, r in enumerate(report):  # every target of every synthesizer and input model arrived and was fitted
            assert r["staleness"].get("sg", {}).get("count", 0) == (12 if g < workers - 1 else 0)
            assert r["staleness"].get("input", {}).get("count", 0) == (12 if g > 0 else 0)
        assert all(np.isfinite(v).all() for v in state.values())


@needs_ray
@pytest.mark.ray
def test_a_dead_worker_or_an_interrupted_checkpoint_write_loses_nothing_and_resume_matches(
        ray_instance, capsys, tmp_path, monkeypatch):
    """A worker killed at step 10 (checkpoint of step 8 intact); Ctrl-C at the checkpoint write's only boundary,
    the rename of the finished file over the old one (checkpoint of step 4 intact); both resume to the same
    parameters as an uninterrupted run. (All runs in workers with one BLAS thread: a driver with several
    threads sums in another order, and Adam's first steps amplify that float32 round-off beyond any tolerance.)"""
    import minidni.io

    data, common = tiny_data(), ["--workers", "2", "--method", "dni", "--lockstep", "--steps", "12",
                                 "--eval-every", "4", "--checkpoint-every", "4"]
    rc, _, err = cli([*common, "--out", str(tmp_path / "uninterrupted")], data, capsys)
    assert rc == 0, err
    want = load_checkpoint(tmp_path / "uninterrupted" / CHECKPOINT)[0]

    rc, out, err = cli([*common, "--out", str(tmp_path / "a"), "--inject-failure", "1:10"], data, capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "group 1 (module 1" in err and "stopped at step 10" in err and "(step 8)" in err
    assert str(tmp_path / "a" / CHECKPOINT) in err and "--resume" in err
    assert out.count("group ") == 2 and " pid " in out  # where each group ran
    arrays, meta = load_checkpoint(tmp_path / "a" / CHECKPOINT)  # one file: arrays and step together
    assert meta["step"] == 8 and arrays and sorted(p.name for p in (tmp_path / "a").iterdir()) == [CHECKPOINT]
    rc, _, err = cli([*common, "--out", str(tmp_path / "a"), "--resume"], data, capsys)
    assert rc == 0, err
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["resumed_from_step"] == 8 and summary["distributed"]["groups"] == [[0, 1], [1, 2]]
    assert (tmp_path / "a" / "learning_curve.png").exists()
    assert_same_state(load_checkpoint(tmp_path / "a" / CHECKPOINT)[0], want, rtol=0)

    replace, renames = minidni.io.os.replace, []

    def interrupted_at_the_second_checkpoint(src, dst):
        renames.append(str(dst))
        if sum(d.endswith(CHECKPOINT) for d in renames) == 2:
            raise KeyboardInterrupt
        return replace(src, dst)

    monkeypatch.setattr(minidni.io.os, "replace", interrupted_at_the_second_checkpoint)
    rc, _, err = cli([*common, "--out", str(tmp_path / "c")], data, capsys)
    monkeypatch.setattr(minidni.io.os, "replace", replace)
    assert rc == 130, err
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [CHECKPOINT]  # no half-written file left
    assert load_checkpoint(tmp_path / "c" / CHECKPOINT)[1]["step"] == 4
    rc, _, err = cli([*common, "--out", str(tmp_path / "c"), "--resume"], data, capsys)
    assert rc == 0, err
    assert_same_state(load_checkpoint(tmp_path / "c" / CHECKPOINT)[0], want, rtol=0)


@needs_ray
@pytest.mark.ray
def test_cupy_workers_each_get_their_own_gpu_and_too_few_gpus_are_refused(ray_instance, capsys, tmp_path):
    """Ray's GPUs are faked (the fixture declares 2); nothing runs on a GPU."""
    actors = spawn_workers(2, cpus_per_worker=0.5, gpus_per_worker=1)
    places = ray_instance.get([a.where.remote() for a in actors], timeout=120)
    assert sorted(len(p["gpu_ids"]) for p in places) == [1, 1] and places[0]["gpu_ids"] != places[1]["gpu_ids"]
    if not backend.cupy_available():  # a worker without CuPy: one line naming the backend, no traceback
        with pytest.raises(backend.BackendError, match="a pipeline worker cannot use backend 'cupy': backend "
                                                       "'cupy' is not installed"):
            Pipeline(make_trainer("dni"), workers=2, backend="cupy", actors=actors)
    for actor in actors:
        ray_instance.kill(actor)
    with pytest.raises(UsageError, match="3 workers x 1 GPU need 3 GPUs; the Ray cluster has 2"):
        spawn_workers(3, cpus_per_worker=0.25, gpus_per_worker=1)
    rc, _, err = cli(["--workers", "3", "--backend", "cupy", "--out", str(tmp_path)], tiny_data(), capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "need 3 GPUs; the Ray cluster has 2" in err


# ---------------------------------------------------------------- python -m minidni.run mnist --workers K
def test_run_command_without_ray_says_how_to_install_it_before_reading_data(monkeypatch, capsys, tmp_path):
    from minidni.run import main

    monkeypatch.setitem(sys.modules, "ray", None)
    missing = tmp_path / "no-data-here"  # the error comes before the data would be read
    assert main(["mnist", "--workers", "2", "--data-dir", str(missing), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"python -m minidni.run mnist: error: {RAY_MISSING}"


@pytest.mark.parametrize("option", [["--lockstep"], ["--ray-address", "head:6379"], ["--interfaces", "cuts"],
                                    ["--ray-timeout", "5"], ["--window", "3"], ["--steps-per-call", "2"]])
def test_run_command_rejects_pipeline_options_without_workers(option, capsys, tmp_path):
    from minidni.run import main

    assert main(["cifar10", *option, "--data-dir", str(tmp_path), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.endswith("needs --workers K (training on a pipeline of Ray workers)")


def test_run_command_refuses_a_window_smaller_than_one_call(capsys, tmp_path):
    from minidni.run import main

    pytest.importorskip("ray", reason='needs the optional Ray extra: pip install -e ".[distributed]"')
    argv = ["mnist", "--workers", "2", "--method", "cdni", "--window", "3", "--steps-per-call", "4",
            "--data-dir", str(tmp_path / "no-data-here"), "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.endswith(
        "--window 3 cannot hold one call of 4 minibatches (--steps-per-call); accepted: --window 4 or more")


@needs_ray
@pytest.mark.ray
def test_run_command_trains_mnist_on_two_workers(ray_instance, shared_data_dir, capsys, tmp_path):
    from minidni.run import main

    argv = ["mnist", "--workers", "2", "--method", "cdni", "--layers", "3", "--width", "16", "--steps", "8",
            "--batch", "32", "--lr", "1e-3", "--eval-every", "4", "--log-every", "4", "--no-progress",
            "--data-dir", str(shared_data_dir), "--out", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("mnist: group ") == 2 and " pid " in out  # where each group runs
    assert "2 workers, decoupled: cdni synthesizers after layer 1; cuts after layer 1" in out
    assert "on 2 workers: test error" in out
    assert re.search(r", \d minibatch(es)? per Ray call \(auto\)\); summary in ", out)
    summary = json.loads((tmp_path / "summary.json").read_text())
    d = summary["distributed"]
    assert d["workers"] == 2 and d["mode"] == "decoupled" and len(d["stages"]) == 2
    assert 1 <= d["steps_per_call"] <= 8 and d["steps_per_call_choice"]["steps_per_call"] == d["steps_per_call"]
    assert d["interfaces"] == {"placement": "cuts", "cuts_after_layers": [1], "synthesizers_after_layers": [1],
                               "input_models_before_layers": [], "layers_per_worker": [[1, 1], [2, 3]]}
    assert [e["step"] for e in summary["curves"]["evals"]] == [0, 4, 8]
    assert 0.0 <= summary["test_error_percent"] <= 100.0 and summary["examples_per_second"] > 0
    assert d["stages"][0]["staleness"]["sg"]["count"] == 8  # every target of the boundary synthesizer arrived
