"""``python -m minidni.bench layers``: layer throughput beside the machine's own matmul throughput.

Times forward and forward+backward of three functional ops in float32 and
converts the times into achieved GFLOP/s with analytic FLOP counts (2*M*N*K per
GEMM; elementwise work, bias adds, im2col/col2im copies are not counted):

- **Linear** (N=256, 784 -> 256): forward ``x @ W`` is ``2*N*D*M``; the backward
  has two GEMMs of the same size (``dy @ W.T``, ``x.T @ dy``), so fwd+bwd = 3x forward.
- **Conv2d** (N=256, 3 -> 128 channels, 5x5, 32x32, same padding 2): forward
  is one GEMM ``2*F*(C*KH*KW)*(N*OH*OW)``; fwd+bwd = 3x forward (``dW``, ``dcol``).
- **LSTM** (T=5, N=256, D=10, H=256): forward ``T * 2*N*4H*(D+H)`` (``x_t @ Wx``
  and ``h_{t-1} @ Wh`` every step); the backward has four GEMMs per step of the
  same sizes (``dx``, ``dWx``, ``dh``, ``dWh``), so fwd+bwd = 3x forward.

The reference is the float32 GEMM of the same backend measured in the same run:
a large square one (1024 x 1024 @ 1024 x 1024, near the BLAS peak) and the
LSTM-shaped one (N x H @ H x 4H = 256 x 256 @ 256 x 1024, the recurrent GEMM an
LSTM step cannot batch over time). Each layer's GFLOP/s is reported as a ratio
of both. Every measurement gets ``--warmup`` untimed calls; then ``--repeats``
rounds time each GEMM and layer once, interleaved, with ``time.perf_counter``
after ``backend.synchronize``. Times are medians over rounds (min and max are
kept too); each ratio is the median of the per-round ratios, so a burst of load
from other processes hits a layer and its reference alike. On a shared machine
the absolute numbers are noisy (the JSON records the load average); the ratios,
measured side by side, are the meaningful figures. On a machine busier than
its core count, multi-threaded BLAS threads wait on each other and small GEMMs
collapse; there ``OPENBLAS_NUM_THREADS=1`` gives steadier (single-core) figures.

Writes ``--out`` (default figures/bench_layers.json) atomically and prints a table.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np

from minidni import backend
from minidni.cli import (command_main, make_parser, nonnegative_int, output_path, positive_int, prepare_out_file,
                         seed_int)
from minidni.functional import (conv2d_backward, conv2d_forward, linear_backward, linear_forward, lstm_backward,
                                lstm_forward)
from minidni.bench.machine import blas_info
from minidni.io import write_json

PROG = "python -m minidni.bench layers"

SIZES = {
    "full": {"linear": dict(N=256, D=784, M=256),
             "conv2d": dict(N=256, C=3, F=128, K=5, H=32, W=32, pad=2),
             "lstm": dict(T=5, N=256, D=10, H=256),
             "square_gemm": 1024},
    "quick": {"linear": dict(N=8, D=12, M=6),
              "conv2d": dict(N=2, C=3, F=4, K=3, H=6, W=6, pad=1),
              "lstm": dict(T=2, N=3, D=4, H=5),
              "square_gemm": 32},
}


def _interleaved_seconds(fns: dict, xp, repeats: int, warmup: int) -> dict[str, list[float]]:
    """Wall times of every ``fns[name]()``, ``repeats`` rounds of one call each, after ``warmup`` untimed calls.

    Rounds interleave the functions, so a burst of load from other processes
    slows the layers and their reference GEMMs alike and per-round ratios stay fair.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    backend.synchronize(xp)
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            backend.synchronize(xp)
            times[name].append(time.perf_counter() - start)
    return times


def _linear_case(s: dict, arr) -> dict:
    x, W, b, dy = arr(s["N"], s["D"]), arr(s["D"], s["M"]), arr(s["M"]), arr(s["N"], s["M"])
    return dict(name="Linear", shape=f"N={s['N']}, {s['D']}->{s['M']}", forward_flops=2 * s["N"] * s["D"] * s["M"],
                forward=lambda: linear_forward(x, W, b),
                both=lambda: linear_backward(dy, linear_forward(x, W, b)[1]))


def _conv_case(s: dict, arr) -> dict:
    n, c, f, k, h, w, pad = (s[key] for key in ("N", "C", "F", "K", "H", "W", "pad"))
    oh, ow = h + 2 * pad - k + 1, w + 2 * pad - k + 1
    x, W, b, dy = arr(n, c, h, w), arr(f, c, k, k), arr(f), arr(n, f, oh, ow)
    return dict(name="Conv2d", shape=f"N={n}, {c}->{f}, {k}x{k}, {h}x{w}, pad {pad}",
                forward_flops=2 * f * (c * k * k) * (n * oh * ow),
                forward=lambda: conv2d_forward(x, W, b, pad=pad),
                both=lambda: conv2d_backward(dy, conv2d_forward(x, W, b, pad=pad)[1]))


def _lstm_case(s: dict, arr) -> dict:
    t, n, d, hid = (s[key] for key in ("T", "N", "D", "H"))
    x, h0, c0, dhs = arr(t, n, d), arr(n, hid), arr(n, hid), arr(t, n, hid)
    Wx, Wh, b = arr(d, 4 * hid) * 0.1, arr(hid, 4 * hid) * 0.1, arr(4 * hid)
    return dict(name="LSTM", shape=f"T={t}, N={n}, D={d}, H={hid}", forward_flops=t * 2 * n * 4 * hid * (d + hid),
                forward=lambda: lstm_forward(x, h0, c0, Wx, Wh, b),
                both=lambda: lstm_backward(dhs, None, lstm_forward(x, h0, c0, Wx, Wh, b)[2]))


def _cases(sizes: dict, xp, rng: np.random.Generator) -> list[dict]:
    """Each case: name, shape text, forward GEMM FLOPs, and closures running forward and forward+backward."""
    def arr(*shape):
        return backend.to_device(rng.standard_normal(shape).astype(np.float32), xp)

    return [_linear_case(sizes["linear"], arr), _conv_case(sizes["conv2d"], arr), _lstm_case(sizes["lstm"], arr)]


def _gemms(sizes: dict, xp, rng: np.random.Generator) -> list[dict]:
    """The float32 matmul references: a square GEMM and the LSTM's recurrent GEMM (N x H @ H x 4H)."""
    def arr(*shape):
        return backend.to_device(rng.standard_normal(shape).astype(np.float32), xp)

    s = sizes["square_gemm"]
    a, b = arr(s, s), arr(s, s)
    n, hid = sizes["lstm"]["N"], sizes["lstm"]["H"]
    h, Wh = arr(n, hid), arr(hid, 4 * hid)
    return [dict(name="square_gemm", shape=f"{s}x{s} @ {s}x{s}", flops=2 * s ** 3, fn=lambda: a @ b),
            dict(name="lstm_gemm", shape=f"{n}x{hid} @ {hid}x{4 * hid}", flops=2 * n * hid * 4 * hid,
                 fn=lambda: h @ Wh)]


def _machine_info(xp) -> dict:
    info = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor(),
            "python": platform.python_version(), "numpy": np.__version__,
            "blas_threads": blas_info(),
            "load_average_1_5_15_min": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    if hasattr(os, "sched_getaffinity"):
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info["blas"] = {k: blas.get(k) for k in ("name", "version", "openblas configuration") if k in blas}
    except (TypeError, KeyError):  # show_config(mode=...) is NumPy >= 1.26
        info["blas"] = None
    if xp is not np:
        props = xp.cuda.runtime.getDeviceProperties(xp.cuda.Device().id)
        info["gpu"] = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        info["cupy"] = xp.__version__
    return info


def run(sizes: dict, xp, repeats: int, warmup: int, seed: int) -> dict:
    """Measure every reference GEMM and layer; returns the JSON-ready result."""
    rng = np.random.default_rng(seed)
    gemms, cases = _gemms(sizes, xp, rng), _cases(sizes, xp, rng)
    fns = {g["name"]: g["fn"] for g in gemms}
    for case in cases:
        fns[case["name"] + " forward"], fns[case["name"] + " both"] = case["forward"], case["both"]
    times = {name: np.array(t) for name, t in _interleaved_seconds(fns, xp, repeats, warmup).items()}

    def spread(t):
        return dict(seconds=float(np.median(t)), seconds_min=float(t.min()), seconds_max=float(t.max()))

    reference = {g["name"]: dict(shape=g["shape"], flops=g["flops"], **spread(times[g["name"]]),
                                 gflops=g["flops"] / float(np.median(times[g["name"]])) / 1e9) for g in gemms}
    layers = {}
    for case in cases:
        fwd, both = times[case["name"] + " forward"], times[case["name"] + " both"]
        flops = 3 * case["forward_flops"]
        ratios = {}
        for g in gemms:  # per-round ratio (layer GFLOP/s / GEMM GFLOP/s), then the median over rounds
            ratios[f"ratio_to_{g['name']}"] = float(np.median((flops / both) / (g["flops"] / times[g["name"]])))
        layers[case["name"]] = dict(
            shape=case["shape"], forward_flops=case["forward_flops"], forward_backward_flops=flops,
            forward=spread(fwd), forward_backward=spread(both),
            forward_gflops=case["forward_flops"] / float(np.median(fwd)) / 1e9,
            forward_backward_gflops=flops / float(np.median(both)) / 1e9, **ratios)
    return dict(backend=backend.backend_name(xp), dtype="float32", repeats=repeats, warmup=warmup, seed=seed,
                timing="median of interleaved rounds after warm-up; time.perf_counter after backend.synchronize; "
                       "ratios are medians of per-round ratios",
                flop_counting="2*M*N*K per GEMM; forward+backward = 3x forward GEMM FLOPs; "
                              "elementwise work not counted",
                reference_gemms=reference, layers=layers, machine=_machine_info(xp))


def table(result: dict) -> str:
    """The result as a fixed-width text table."""
    lines = [f"float32 on {result['backend']}, median of {result['repeats']} (noisy if the machine is shared; "
             f"load average {result['machine']['load_average_1_5_15_min']})",
             f"{'op':<12} {'shape':<38} {'fwd ms':>9} {'fwd+bwd ms':>11} {'GFLOP/s':>9} {'/square':>8} "
             f"{'/lstm-gemm':>10}"]
    for name, g in result["reference_gemms"].items():
        lines.append(f"{name:<12} {g['shape']:<38} {g['seconds'] * 1e3:9.2f} {'':>11} {g['gflops']:9.1f}")
    for name, r in result["layers"].items():
        lines.append(f"{name:<12} {r['shape']:<38} {r['forward']['seconds'] * 1e3:9.2f} "
                     f"{r['forward_backward']['seconds'] * 1e3:11.2f} {r['forward_backward_gflops']:9.1f} "
                     f"{r['ratio_to_square_gemm']:8.0%} {r['ratio_to_lstm_gemm']:10.0%}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(PROG, "Forward+backward time and GFLOP/s of Linear, Conv2d and LSTM beside float32 matmul.")
    parser.add_argument("--backend", choices=backend.BACKENDS,
                        default=os.environ.get(backend.ENV_VAR, "numpy") or "numpy", help="array backend")
    parser.add_argument("--repeats", type=positive_int, default=7, help="timed runs per measurement (median)")
    parser.add_argument("--warmup", type=nonnegative_int, default=2, help="untimed runs before timing")
    parser.add_argument("--seed", type=seed_int, default=0, help="seed of the random inputs")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test, not a measurement)")
    parser.add_argument("--out", type=output_path, default=Path("figures/bench_layers.json"), help="JSON file to write")
    def body(args) -> int:
        prepare_out_file(args.out)
        xp = backend.set_backend(args.backend)
        result = run(SIZES["quick" if args.quick else "full"], xp, args.repeats, args.warmup, args.seed)
        result["sizes"] = "quick" if args.quick else "full"
        print(table(result))
        print(f"wrote {write_json(args.out, result)}")
        return 0

    return command_main(PROG, parser, argv, body)
