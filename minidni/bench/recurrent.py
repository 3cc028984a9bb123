"""``python -m minidni.bench recurrent``: training windows per second on Copy, and where the time goes.

Trains an LSTM (``--hidden`` units) with a linear head on Copy (N fixed at
``--length``), ``--batch`` parallel streams (one or more batch sizes), windows of
``--T`` steps, with each of ``--modes`` (bptt, dni, dni-aux) through
:class:`minidni.dni.recurrent.RecurrentTrainer`, exactly as ``python -m minidni.run
copy`` does (Adam, gradient clipping, episode resets, diagnostics collected once
per block). Measurements are INTERLEAVED: after one untimed warm-up round, each of
``--rounds`` rounds times ``--steps`` windows of every (batch, mode) in turn, so a
load change on a shared machine hits all of them alike; figures are medians over
rounds. The Copy windows of a block are generated (and moved to the device)
before the block and timed separately (``data_seconds_per_step``), so steps/s is
the trainer's own speed. Every time is taken twice: wall clock (the figures) and
process CPU time (``*_cpu``): with ``OPENBLAS_NUM_THREADS=1`` the latter is what a
window costs on a core of its own, which stays meaningful on a loaded machine.

**Share of time in matrix products.** Python's profiler cannot see inside
``a @ b``, so the matrix products of one window are listed analytically
(:func:`window_gemms`: the LSTM's input projection, its T recurrent products
forward and backward, dWx, dWh (no dx: the input is data), the head, the synthesizer M's prediction and
refit, the aux head; same shapes and transposed operands as the code; a test
checks the list against the products the trainer really runs) and REPLAYED on
random operands right after each timed block: ``gemm_fraction = replayed GEMM
seconds / measured seconds per window``. The replay runs each product on warm
caches, the fastest of 5 passes, so it is a lower bound of the GEMM time inside
the trainer and ``gemm_fraction`` errs low. The rest of the window is
elementwise work (LSTM gates, the optimisers, clipping, losses), array
allocation and Python.

**Profile.** The warm-up block of every (batch, mode) runs under cProfile; the
JSON keeps the functions with the most own time (``own_ms_per_window``, which for
the LSTM and linear functions includes their matrix products, and
``cumulative_ms_per_window``). Profiling adds overhead to Python-heavy code, so
read it for proportions, not speed.

Writes ``--out`` (default figures/bench_recurrent.json) atomically and prints a
table. The JSON records the load average at the start and the end, the BLAS
thread setting, and whether a CuPy GPU was available (``--backend cupy`` runs
the same measurement on the GPU where there is one; without one it exits 2).

    python -m minidni.bench recurrent --batch 64 128 --modes bptt dni dni-aux
"""

from __future__ import annotations

import argparse
import cProfile
import os
import platform
import pstats
import statistics
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from minidni import backend
from minidni.cli import command_main, make_parser, output_path, parse_or_exit, positive_int, prepare_out_file, seed_int
from minidni.dni.recurrent import MODES, RecurrentTrainer, copy_loss
from minidni.bench.machine import blas_info, load_average
from minidni.io import write_json
from minidni.tasks import CopyTaskStream, Curriculum
from minidni.tasks.copy import IN_CHANNELS, OUT_CHANNELS

PROG = "python -m minidni.bench recurrent"
QUICK = {"hidden": 8, "batch": [4], "steps": 3, "rounds": 1}  # --quick: a smoke test, not a measurement
PROFILE_TOP = 10


class Gemm(NamedTuple):
    """One matrix product ``(m x k) @ (k x n)``.

    ``a_t``: the left operand is a transposed view (stored k x m), as in ``x.T @ dy``;
    ``b_t``: the right one is (stored n x k), as in ``dy @ W.T``.
    """
    name: str
    m: int
    k: int
    n: int
    a_t: bool = False
    b_t: bool = False

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n


def window_gemms(mode: str, T: int, B: int, D: int, H: int, C: int) -> list[Gemm]:
    """The matrix products of one training window in the steady state (a pending SG exists).

    T steps, B streams, D inputs, H hidden units, C outputs. Follows
    :meth:`RecurrentTrainer.train_window`: the LSTM forward (one input projection
    (T*B, D) @ (D, 4H), then one (B, H) @ (H, 4H) per step), the head (T*B, H) @ (H, C)
    and its backward (dx and dW), the LSTM backward (one (B, 4H) @ (4H, H) per step,
    then dWx and dWh over all steps: no dx, the input is data), and with an SG: M's prediction (B, 2H) @ (2H, 2H)
    and its refit on the previous window's state (forward and dW; the refit needs no
    gradient at M's input, ``Linear.param_grads``); with dni-aux the aux head
    (B, H) @ (H, 2H) on the first hidden state and its backward.
    """
    g = [Gemm("lstm x@Wx", T * B, D, 4 * H)]
    g += [Gemm("lstm h@Wh", B, H, 4 * H)] * T
    g += [Gemm("head fwd", T * B, H, C), Gemm("head dx", T * B, C, H, b_t=True),
          Gemm("head dW", H, T * B, C, a_t=True)]
    if mode != "bptt":
        g += [Gemm("sg predict", B, 2 * H, 2 * H)]
    if mode == "dni-aux":
        g += [Gemm("aux fwd", B, H, 2 * H), Gemm("aux dx", B, 2 * H, H, b_t=True),
              Gemm("aux dW", H, B, 2 * H, a_t=True)]
    g += [Gemm("lstm dh", B, 4 * H, H, b_t=True)] * T
    g += [Gemm("lstm dWx", D, T * B, 4 * H, a_t=True),
          Gemm("lstm dWh", H, T * B, 4 * H, a_t=True)]
    if mode == "dni-aux":  # the aux loss's share of (dh0, dc0), taken out of M's target: one step back
        g += [Gemm("aux share dh0", B, 4 * H, H, b_t=True)]
    if mode != "bptt":
        g += [Gemm("sg refit fwd", B, 2 * H, 2 * H), Gemm("sg refit dW", 2 * H, B, 2 * H, a_t=True)]
    return g


class GemmReplay:
    """Random float32 operands (on ``xp``) for every distinct product shape, to time a list of GEMMs."""

    def __init__(self, gemms: list[Gemm], xp, rng: np.random.Generator):
        self.xp = xp
        self.operands = {}
        for g in gemms:
            key = g[1:]
            if key not in self.operands:
                a = rng.standard_normal((g.k, g.m) if g.a_t else (g.m, g.k)).astype(np.float32)
                b = rng.standard_normal((g.n, g.k) if g.b_t else (g.k, g.n)).astype(np.float32)
                a, b = backend.to_device(a, xp), backend.to_device(b, xp)
                self.operands[key] = (a.T if g.a_t else a, b.T if g.b_t else b)

    def seconds(self, gemms: list[Gemm], repeats: int = 5) -> tuple[float, float]:
        """Wall and process-CPU seconds of one pass over ``gemms``: the fastest of ``repeats`` after a warm-up."""
        def once():
            for g in gemms:
                a, b = self.operands[g[1:]]
                a @ b
            backend.synchronize(self.xp)

        once()
        wall, cpu = [], []
        for _ in range(repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            once()
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        return min(wall), min(cpu)


def _parser() -> argparse.ArgumentParser:
    p = make_parser(PROG, "Windows/s of the recurrent trainer on Copy and the share of time in matrix products.")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="training modes to compare")
    p.add_argument("--hidden", type=positive_int, default=256, help="LSTM units H (paper: 256 for Copy)")
    p.add_argument("--batch", type=positive_int, nargs="+", default=[64, 128], help="parallel streams B (one or more)")
    p.add_argument("--T", type=positive_int, default=3, help="steps per window")
    p.add_argument("--length", type=positive_int, default=2, help="Copy's N (fixed)")
    p.add_argument("--steps", type=positive_int, default=50, help="windows per (batch, mode) per round")
    p.add_argument("--rounds", type=positive_int, default=3, help="timed rounds (medians over rounds)")
    p.add_argument("--quick", action="store_true",
                   help="tiny defaults for --hidden, --batch, --steps, --rounds (a smoke test, not a measurement); "
                        "options given explicitly keep their values")
    p.add_argument("--backend", choices=backend.BACKENDS, default="numpy", help="array backend")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the model and the Copy streams")
    p.add_argument("--out", type=output_path, default=Path("figures/bench_recurrent.json"), help="JSON file to write")
    return p


def _windows(stream: CopyTaskStream, xp, count: int, T: int) -> tuple[list, float]:
    """``count`` Copy windows on the device as (x, target, mask, episode_end) and the seconds per window."""
    start = time.perf_counter()
    out = []
    for _ in range(count):
        w = stream.next_window(T)
        out.append((backend.to_device(w.x, xp), backend.to_device(w.target, xp), backend.to_device(w.mask, xp),
                    w.episode_end))
    backend.synchronize(xp)
    return out, (time.perf_counter() - start) / count


def _train_block(trainer: RecurrentTrainer, windows: list, xp) -> tuple[float, float]:
    """Train on every window; wall and process-CPU seconds per window, including the one
    diagnostics sync a logging interval makes."""
    start, start_cpu = time.perf_counter(), time.process_time()
    for x, target, mask, ends in windows:
        trainer.train_window(x, lambda logits: copy_loss(logits, target, mask), episode_end=ends)
    trainer.collect_diagnostics()
    backend.synchronize(xp)
    return (time.perf_counter() - start) / len(windows), (time.process_time() - start_cpu) / len(windows)


def _profile_top(profiler: cProfile.Profile, windows: int) -> list[dict]:
    """The ``PROFILE_TOP`` functions with the most own time, per window, with package-relative names."""
    stats = pstats.Stats(profiler).stats  # {(file, line, name): (calls, ncalls, own, cumulative, callers)}
    rows = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:PROFILE_TOP]
    top = []
    for (file, line, name), (_, ncalls, own, cumulative, _) in rows:
        where = file.split("minidni" + os.sep, 1)[-1] if "minidni" + os.sep in file else os.path.basename(file)
        top.append({"function": f"{where}:{line}({name})" if line else name, "calls_per_window": ncalls / windows,
                    "own_ms_per_window": own / windows * 1e3, "cumulative_ms_per_window": cumulative / windows * 1e3})
    return top


def _machine(xp) -> dict:
    info = {"platform": platform.platform(), "cpus": os.cpu_count(), "numpy": np.__version__,
            "blas_threads": blas_info(),
            "cupy_gpu_available": backend.cupy_available()}
    if not info["cupy_gpu_available"]:
        info["gpu_note"] = "no CuPy / NVIDIA GPU on this machine: no --backend cupy figures"
    if xp is not np:
        props = xp.cuda.runtime.getDeviceProperties(xp.cuda.Device().id)
        info["gpu"] = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return info


def measure(args: argparse.Namespace) -> dict:
    """Run the interleaved rounds; returns the JSON-ready result (``runs``: one entry per (batch, mode))."""
    xp = backend.set_backend(args.backend)
    T, H = args.T, args.hidden
    load_start = load_average()
    setups = {}
    for B in args.batch:
        for mode in args.modes:
            curriculum = Curriculum("copy", start_length=args.length, max_length=args.length)
            setups[B, mode] = {
                "trainer": RecurrentTrainer(IN_CHANNELS, OUT_CHANNELS, H, mode=mode, lr=1e-3,
                                            rng=np.random.default_rng(args.seed)),
                "stream": CopyTaskStream(curriculum, B, rng=np.random.default_rng([args.seed, 1])),
                "gemms": window_gemms(mode, T, B, IN_CHANNELS, H, OUT_CHANNELS),
                "step": [], "cpu": [], "data": [], "gemm": [], "gemm_cpu": []}
    replay = GemmReplay([g for s in setups.values() for g in s["gemms"]], xp, np.random.default_rng(args.seed))
    for rnd in range(args.rounds + 1):  # round 0: untimed warm-up, profiled
        for s in setups.values():
            windows, data_s = _windows(s["stream"], xp, args.steps, T)
            if rnd == 0:
                profiler = cProfile.Profile()
                profiler.enable()
                _train_block(s["trainer"], windows, xp)
                profiler.disable()
                s["profile"] = _profile_top(profiler, len(windows))
                continue
            for key, value in zip(("step", "cpu", "gemm", "gemm_cpu"),
                                  _train_block(s["trainer"], windows, xp) + replay.seconds(s["gemms"])):
                s[key].append(value)
            s["data"].append(data_s)
    runs = []
    for (B, mode), s in setups.items():
        step_s, gemm_s = statistics.median(s["step"]), statistics.median(s["gemm"])
        cpu_s, gemm_cpu_s = statistics.median(s["cpu"]), statistics.median(s["gemm_cpu"])
        flops = sum(g.flops for g in s["gemms"])
        runs.append({"mode": mode, "batch": B, "steps_per_second": 1.0 / step_s, "seconds_per_step": step_s,
                     "seconds_per_step_min_max": [min(s["step"]), max(s["step"])],
                     "gemm_seconds_per_step": gemm_s, "gemm_fraction": gemm_s / step_s,
                     "other_seconds_per_step": step_s - gemm_s,
                     "cpu_seconds_per_step": cpu_s, "gemm_cpu_seconds_per_step": gemm_cpu_s,
                     "gemm_fraction_cpu": gemm_cpu_s / cpu_s,
                     "gemm_flops_per_step": flops, "gemms_per_step": len(s["gemms"]),
                     "achieved_gemm_gflops": flops / step_s / 1e9, "replay_gemm_gflops": flops / gemm_s / 1e9,
                     "data_seconds_per_step": statistics.median(s["data"]), "profile_top": s["profile"]})
    return {"task": "copy", "config": {"T": T, "batch": list(args.batch), "hidden": H, "length": args.length,
                                       "modes": list(args.modes), "steps_per_round": args.steps,
                                       "rounds": args.rounds, "backend": args.backend, "dtype": "float32",
                                       "seed": args.seed, "quick": args.quick},
            "timing": "interleaved rounds after an untimed (profiled) warm-up round; medians over rounds; "
                      "time.perf_counter after backend.synchronize",
            "gemm_fraction_method": "GEMMs of window_gemms() replayed on random operands after each block "
                                    "(fastest of 5 passes) / measured seconds per window; a lower bound",
            "cpu_time_note": "*_cpu fields use process CPU time (all threads): with one BLAS thread it is the time "
                             "a window needs on a core of its own, little changed by other processes' load; with "
                             "several BLAS threads it also counts their spinning, read the wall-clock fields",
            "machine": {**_machine(xp), "load_average_start": load_start, "load_average_end": load_average()},
            "runs": runs}


def table(result: dict) -> str:
    """The result as a fixed-width text table."""
    c, m = result["config"], result["machine"]
    lines = [f"Copy (N={c['length']}), T={c['T']}, H={c['hidden']}, {c['backend']} float32, median of {c['rounds']} "
             f"rounds x {c['steps_per_round']} windows; load {m['load_average_start']} -> {m['load_average_end']}",
             f"{'mode':<8} {'batch':>5} {'windows/s':>10} {'ms/window':>10} {'GEMM ms':>8} {'in GEMMs':>9} "
             f"{'GFLOP/s':>8} {'data ms':>8} {'CPU ms':>7} {'(GEMMs)':>8}"]
    for r in result["runs"]:
        lines.append(f"{r['mode']:<8} {r['batch']:>5} {r['steps_per_second']:10.1f} "
                     f"{r['seconds_per_step'] * 1e3:10.2f} "
                     f"{r['gemm_seconds_per_step'] * 1e3:8.2f} {r['gemm_fraction']:9.0%} "
                     f"{r['achieved_gemm_gflops']:8.1f} {r['data_seconds_per_step'] * 1e3:8.2f} "
                     f"{r['cpu_seconds_per_step'] * 1e3:7.2f} {r['gemm_fraction_cpu']:8.0%}")
    return "\n".join(lines)


def _profile_text(run: dict) -> str:
    lines = [f"profile ({run['mode']}, batch {run['batch']}; ms per window, own / cumulative; includes GEMMs):"]
    lines += [f"  {p['own_ms_per_window']:7.3f} {p['cumulative_ms_per_window']:7.3f}  {p['function']}"
              for p in run["profile_top"][:6]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parse_or_exit(parser, argv)
    if isinstance(args, int):  # --help, or a bad option already reported in one line
        return args
    if args.quick:  # tiny defaults; what the user gave explicitly wins (command_main parses again)
        parser.set_defaults(**QUICK)

    def body(args: argparse.Namespace) -> int:
        prepare_out_file(args.out)
        result = measure(args)
        print(table(result))
        print(_profile_text(max(result["runs"], key=lambda r: (r["batch"], r["mode"] != "bptt"))))
        print(f"wrote {write_json(args.out, result)}")
        return 0

    return command_main(PROG, parser, argv, body)
