"""``python -m minidni.bench feedforward``: the cost of DNI in steps/s, beside its analytic FLOPs.

Trains the paper's MNIST FCN (``--layers`` hidden layers of 256, batch
``--batch``) on random inputs with each of ``--methods`` (default bprop and
cdni), INTERLEAVED: every round times ``--steps`` steps of each method in turn,
so a load change on a shared machine hits all methods alike. Reports the median
steps/s over rounds (the first round is a discarded warm-up), each method's
time per step relative to bprop, and the analytic FLOPs of one step:

- every Linear (N x D -> M) costs ``2 N D M`` forward and ``4 N D M`` backward
  (``dx`` and ``dW``), so ``6 N D M`` per trained step, except the first Linear
  of the bottom module and of every synthesizer, whose input gradient nobody
  needs and the trainer skips (:func:`minidni.dni.synthesizers.param_grads`):
  ``4 N D M``; BatchNorm, ReLU, the loss and the optimiser (elementwise work)
  are not counted;
- a bprop step is the model's fwd+bwd; a (c)DNI step is the same model fwd+bwd
  plus every synthesizer's forward (its prediction) and backward (its
  regression), ``6 N D M`` per synthesizer Linear. No diagnostic pass runs.

So ``flops_ratio = (model + synthesizers) / model`` is what the extra work alone
predicts for ``time_ratio = seconds per step / bprop's``; a measured ratio above
it is overhead the FLOPs do not see (elementwise ops, Python, memory traffic).
Writes ``--out`` (default figures/bench_feedforward.json) atomically and prints a table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from minidni import backend, models
from minidni.cli import (int_range, make_parser, output_path, parse_or_exit, positive_int, prepare_out_file,
                         run_command, seed_int)
from minidni.dni.feedforward import METHODS, build_trainer
from minidni.bench.machine import blas_info
from minidni.io import write_json
from minidni.layers import Linear

PROG = "python -m minidni.bench feedforward"


def linear_flops(net, n: int, *, input_grad: bool = True) -> int:
    """FLOPs of one forward + backward of every Linear in ``net`` for a batch of ``n`` (6 N D M each).

    ``input_grad=False``: the net's input gradient is skipped, so a first Linear costs ``4 N D M``.
    """
    return sum((4 if i == 0 and not input_grad else 6) * n * layer.in_dim * layer.out_dim
               for i, layer in enumerate(net.layers) if isinstance(layer, Linear))


def _trainer(method: str, args: argparse.Namespace):
    rng = np.random.default_rng(args.seed)
    nets = models.fcn(args.layers, rng=rng)
    return build_trainer(nets, method=method, in_shape=(784,), lr=1e-4, sg_hidden=args.sg_hidden,
                         sg_width=args.sg_width, rng=rng, seed=args.seed)


def _flops(trainer, n: int) -> dict:
    model = sum(linear_flops(m.net, n, input_grad=i > 0) for i, m in enumerate(trainer.modules))
    sgs = sum(linear_flops(s.net, n, input_grad=False) for s in trainer.synthesizers)
    return {"model_flops": model, "synthesizer_flops": sgs, "flops_ratio": (model + sgs) / model}


def main(argv=None) -> int:
    p = make_parser(PROG, "Steps/s of bprop and (c)DNI on the MNIST FCN, measured side by side, with FLOPs.")
    p.add_argument("--layers", type=positive_int, default=3, help="hidden layers of the FCN")
    p.add_argument("--batch", type=positive_int, default=256, help="minibatch size")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=["bprop", "cdni"], help="methods to compare")
    p.add_argument("--sg-hidden", type=int_range(0, 2), default=None,
                   help="synthesizer hidden layers (default: 2 for dni, 0 for cdni, as in the paper)")
    p.add_argument("--sg-width", type=positive_int, default=1024, help="synthesizer hidden units (paper: 1024)")
    p.add_argument("--rounds", type=int_range(2), default=6,
                   help="interleaved rounds, at least 2 (the first is a warm-up and is not timed)")
    p.add_argument("--steps", type=positive_int, default=30, help="steps per method per round")
    p.add_argument("--backend", choices=backend.BACKENDS, default=os.environ.get(backend.ENV_VAR, "numpy") or "numpy")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--out", type=output_path, default=Path("figures/bench_feedforward.json"), help="JSON output file")
    args = parse_or_exit(p, argv)
    if isinstance(args, int):  # --help, or a bad option already reported in one line
        return args
    return run_command(PROG, lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    prepare_out_file(args.out)
    xp = backend.set_backend(args.backend)
    rng = np.random.default_rng([args.seed, 1])
    x = backend.to_device(rng.random((args.batch, 784), dtype=np.float32))
    y = backend.to_device(rng.integers(0, 10, args.batch))
    trainers = {m: _trainer(m, args) for m in args.methods}
    times = {m: [] for m in args.methods}
    for r in range(args.rounds):
        for method, tr in trainers.items():
            backend.synchronize(xp)
            start = time.perf_counter()
            for _ in range(args.steps):
                tr.step(x, y)
            backend.synchronize(xp)
            if r > 0:  # round 0 warms caches and allocators up
                times[method].append((time.perf_counter() - start) / args.steps)
    rows = {}
    for method, tr in trainers.items():
        sec = statistics.median(times[method]) if times[method] else float("nan")
        rows[method] = {"seconds_per_step": sec, "steps_per_second": 1.0 / sec, **_flops(tr, args.batch),
                        "sg_hidden": ((2 if method == "dni" else 0) if args.sg_hidden is None else args.sg_hidden)
                        if tr.synthesizers else None, "all_round_seconds_per_step": times[method]}
    base = rows.get("bprop", rows[args.methods[0]])
    for row in rows.values():
        row["time_ratio"] = row["seconds_per_step"] / base["seconds_per_step"]
    result = {"benchmark": "feedforward", "model": f"FCN-{args.layers} (256 units, BN, ReLU)", "batch": args.batch,
              "sg_width": args.sg_width, "rounds_timed": args.rounds - 1, "steps_per_round": args.steps,
              "backend": args.backend, "dtype": "float32", "methods": rows, "machine": platform.platform(),
              "cpu_count": os.cpu_count(), "load_average": list(os.getloadavg()),
              "blas_threads": blas_info()}
    write_json(args.out, result)
    print(f"{'method':8} {'steps/s':>8} {'time x':>7} {'MFLOP model':>12} {'MFLOP SG':>9} {'FLOPs x':>8}")
    for method, row in rows.items():
        print(f"{method:8} {row['steps_per_second']:8.1f} {row['time_ratio']:7.2f} {row['model_flops'] / 1e6:12.0f} "
              f"{row['synthesizer_flops'] / 1e6:9.0f} {row['flops_ratio']:8.2f}")
    print(f"written to {args.out}")
    return 0
