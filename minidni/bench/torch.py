"""``python -m minidni.bench torch``: minidni beside PyTorch eager on the same work, in one process.

Optional: needs PyTorch (``pip install -e ".[bench]"``; the package itself never
imports it). Times, side by side with the same number of threads (``--threads``,
default all cores: NumPy's BLAS limited with threadpoolctl, ``torch.set_num_threads``):

- **LSTM forward+backward** at the Copy shape (T=5, N=256, D=10, H=256) and the PTB
  shape (T=20, N=128, D=64, H=1024): ours :func:`~minidni.functional.lstm_forward`
  and :func:`~minidni.functional.lstm_backward` with a workspace (as the trainer
  runs them), PyTorch ``nn.LSTM``; both compute the weight gradients and the
  gradients at h0 and c0, neither the one at the input (data). On the CPU
  ``nn.LSTM`` runs oneDNN's fused LSTM primitive (JIT-compiled gate kernels on all
  threads); the ``*_no_onednn`` rows time it again with oneDNN switched off, i.e.
  ATen's own cell, whose structure (BLAS products, per-step gate kernels) is ours.
- **A Copy training window** (bptt, dni, dni-aux) at H=256, B=64, T=3, Copy N=2:
  ours :meth:`RecurrentTrainer.train_window <minidni.dni.recurrent.RecurrentTrainer.train_window>`
  with :func:`~minidni.dni.recurrent.copy_loss`, the code the ``copy`` command runs
  (Adam lr 1e-3, clip 1, episode resets, diagnostics collected once per block);
  PyTorch :class:`TorchCopyTrainer`: ``nn.LSTMCell`` stepped over the window (a
  per-step loop is how a per-row episode reset is written in PyTorch) + ``nn.Linear``
  head, masked sigmoid cross-entropy (``binary_cross_entropy_with_logits``),
  ``torch.optim.Adam``, ``clip_grad_norm_``; for DNI a zero-initialised
  ``nn.Linear(2H, 2H)`` SG on ``[h; c]`` with the bootstrapped target (for dni-aux
  without the aux loss's share, ``torch.autograd.grad``), same units and order as ours (``tests/test_torch_parity.py`` checks one window's loss and
  gradients, bptt and dni, against ours from the same weights).
- **An MNIST FCN-3 step** (bprop, cdni; batch 256, 784-256-256-256-10 with BN and
  ReLU, Adam lr 1e-4, cdni with label-conditioned linear SGs): ours
  :class:`~minidni.dni.feedforward.FeedForwardTrainer` as ``bench feedforward``
  builds it; PyTorch :class:`TorchFCN`, the same modules as ``nn.Sequential``.

Both sides start from the same weights and see the same data. PyTorch runs as
people write it: default ``nn`` modules, default Adam (``--torch-adam fused``
picks its fused CPU kernel instead; the JSON records which), gradients set to
None by ``zero_grad``; nothing extra is computed on its side (ours also keeps
its per-window diagnostics). Measurements are INTERLEAVED: after an untimed
warm-up round, every round times ``--steps`` calls of each item on both sides
in turn (which side goes first alternates), so load from other processes hits
both alike; the ratio (PyTorch seconds / minidni seconds: above 1 means minidni
is faster) is the median of the per-round ratios.

**BLAS environment.** Where ``OPENBLAS_CORETYPE`` or ``OPENBLAS_L2_SIZE`` is set
(this project's build machines set ``Haswell``, which halves float32 GEMM on an
AVX-512 CPU), the benchmark re-executes itself with both unset before NumPy is
loaded, for its own process only (``--keep-blas-env`` keeps them). The JSON
records what was removed and the kernel OpenBLAS then runs (threadpoolctl's
``architecture``), the thread counts, the load average at the start and the end,
and PyTorch's own BLAS (its build configuration). CUDA: this benchmark runs on
the CPU; the JSON notes whether a CuPy GPU was visible.

Writes ``--out`` (default figures/bench_torch.json) and a bar chart of the
ratios next to it (same name, ``.png``), atomically, and prints a table.

    python -m minidni.bench torch                  # about a minute on 2 cores
    python -m minidni.bench torch --quick          # tiny sizes: a smoke test, not a measurement
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from minidni import backend, models
from minidni.bench.machine import load_average
from minidni.cli import (UsageError, make_parser, output_path, parse_or_exit, positive_int, prepare_out_file,
                         run_command, seed_int)
from minidni.dni.feedforward import build_trainer
from minidni.dni.recurrent import RecurrentTrainer, copy_loss
from minidni.functional.lstm import lstm_backward, lstm_forward
from minidni.io import save_figure, write_json
from minidni.layers import BatchNorm, Linear, ReLU
from minidni.tasks import CopyTaskStream, Curriculum
from minidni.tasks.copy import IN_CHANNELS, OUT_CHANNELS
from minidni.workspace import Workspace

PROG = "python -m minidni.bench torch"
BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
REMOVED_ENV = "MINIDNI_BENCH_REMOVED_BLAS_ENV"  # set in the re-executed process: what was removed (JSON)
LSTM_SHAPES = {"copy": (5, 256, 10, 256), "ptb": (20, 128, 64, 1024)}  # T, N, D, H
COPY = {"hidden": 256, "batch": 64, "T": 3, "length": 2, "lr": 1e-3}
FCN = {"layers": 3, "batch": 256, "lr": 1e-4}
QUICK_LSTM = {"copy": (3, 8, 10, 16), "ptb": (4, 8, 12, 32)}
QUICK_COPY = {"hidden": 16, "batch": 4, "T": 3, "length": 2, "lr": 1e-3}
QUICK_FCN = {"layers": 2, "batch": 16, "lr": 1e-4}


def require_torch():
    """The ``torch`` module, or a :class:`UsageError` saying how to install it."""
    try:
        import torch  # noqa: PLC0415  (optional: only this benchmark and its test use PyTorch)
    except ImportError:
        raise UsageError('PyTorch is not installed; this benchmark needs it: pip install -e ".[bench]" '
                         '(CPU wheel: pip install torch --index-url https://download.pytorch.org/whl/cpu)') from None
    return torch


def _t(torch, a):
    """A host array as a torch tensor (float32 stays float32)."""
    return torch.from_numpy(np.ascontiguousarray(backend.to_numpy(a)))


# -- the PyTorch side -------------------------------------------------------------------------------
class TorchCopyTrainer:
    """PyTorch eager twin of :class:`~minidni.dni.recurrent.RecurrentTrainer` (same model, units and order).

    Built from one of ours (``ours``), whose current weights it copies. ``nn.LSTMCell``
    has two biases; ``bias_hh`` is fixed at 0 (not trained) so the model has ours'
    single bias. ``train_window(x, target, mask, episode_end)`` takes host arrays
    (as the copy command's stream gives them) and returns the loss (a 0-d tensor);
    after it, ``.grad`` of every parameter holds that window's gradients (the core's
    after clipping) until the next window; ``h0_grad``, ``c0_grad`` the gradients at
    the window's first state (dni modes).
    """

    def __init__(self, ours: RecurrentTrainer, *, adam: str = "default"):
        torch = self.torch = require_torch()
        nn = torch.nn
        H, D = ours.hidden, ours.lstm.input_dim
        C = ours.head.out_dim
        self.mode, self.H, self.sg_scale, self.aux_weight, self.clip, self.aux_in_target = (
            ours.mode, H, ours.sg_scale, ours.aux_weight, ours.clip, ours.aux_in_target)
        self.cell = nn.LSTMCell(D, H)
        self.head = nn.Linear(H, C)
        with torch.no_grad():
            p = {k: _t(torch, v) for k, v in ours.core_params.items()}
            self.cell.weight_ih.copy_(p["lstm.Wx"].T)
            self.cell.weight_hh.copy_(p["lstm.Wh"].T)
            self.cell.bias_ih.copy_(p["lstm.b"])
            self.cell.bias_hh.zero_()
            self.head.weight.copy_(p["head.W"].T)
            self.head.bias.copy_(p["head.b"])
        self.cell.bias_hh.requires_grad_(False)
        core = [self.cell.weight_ih, self.cell.weight_hh, self.cell.bias_ih, *self.head.parameters()]
        self.aux = self.sg = None
        if self.mode == "dni-aux":
            self.aux = nn.Linear(H, 2 * H)
            with torch.no_grad():
                self.aux.weight.copy_(p["aux.W"].T)
                self.aux.bias.copy_(p["aux.b"])
            core += list(self.aux.parameters())
        self.core = core
        options = {"fused": True} if adam == "fused" else {}
        self.opt = torch.optim.Adam(core, lr=ours.opt.lr, **options)
        if ours.uses_sg:
            self.sg = nn.Linear(2 * H, 2 * H)
            with torch.no_grad():
                self.sg.weight.copy_(_t(torch, ours.sg.params["W"]).T)
                self.sg.bias.copy_(_t(torch, ours.sg.params["b"]))
            self.sg_opt = torch.optim.Adam(self.sg.parameters(), lr=ours.sg_opt.lr, **options)
        self.state = None
        self.pending = None  # (s, p, keep) of the last window, awaiting its bootstrapped target

    def train_window(self, x, target, mask, episode_end):
        torch = self.torch
        F = torch.nn.functional
        x, target, mask = _t(torch, x), _t(torch, target), _t(torch, mask)
        T, B, _ = x.shape
        H = self.H
        ends = torch.from_numpy(np.asarray(episode_end, bool))
        keep = torch.ones(T, B, 1)
        keep[1:, :, 0] = (~ends[:-1]).float()  # a row whose episode ended at step t-1 restarts at step t
        carry = (~ends[-1]).float()[:, None]
        if self.state is None:
            self.state = (torch.zeros(B, H), torch.zeros(B, H))
        for q in self.core:
            q.grad = None  # zero_grad(set_to_none=True); the last window's grads stay readable until here
        h0, c0 = (s.clone().requires_grad_(self.sg is not None) for s in self.state)
        h, c, hs = h0, c0, []
        for t in range(T):
            h, c = self.cell(x[t], (h * keep[t], c * keep[t]))
            hs.append(h)
        hs = torch.stack(hs)
        logits = self.head(hs)
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        loss = (bce.sum(dim=2) * mask).sum() / B  # sum over steps and channels, mean over the batch
        total, outputs, grads = loss, [], []
        s = p = None
        if self.sg is not None:
            s = torch.cat([h, c], dim=1).detach()
            with torch.no_grad():
                p = self.sg(s) * carry  # per-example SG; an episode that ended here has no future
            delta = p * (self.sg_scale / B)
            outputs, grads = [h, c], [delta[:, :H], delta[:, H:]]
        aux_share = None
        if self.aux is not None:
            aux_loss = ((self.aux(hs[0]) - p) ** 2).sum() * (0.5 * self.aux_weight / B)
            total = total + aux_loss
            if self.pending is not None and not self.aux_in_target:  # M's target leaves the aux loss's share out
                aux_share = torch.autograd.grad(aux_loss, [h0, c0], retain_graph=True)
        torch.autograd.backward([total, *outputs], [None, *grads])
        if self.pending is not None:  # M regresses onto B * [dh0; dc0] of this window (bootstrapped)
            s_prev, p_prev, keep_prev = self.pending
            dh0, dc0 = h0.grad, c0.grad
            if aux_share is not None:
                dh0, dc0 = dh0 - aux_share[0], dc0 - aux_share[1]
            target_sg = torch.cat([dh0, dc0], dim=1) * B
            err = (self.sg(s_prev) - target_sg) * keep_prev
            self.sg_opt.zero_grad()
            ((err * err).sum() * (0.5 / B)).backward()
            self.sg_opt.step()
        self.h0_grad, self.c0_grad = h0.grad, c0.grad
        self.pending = (s, p, carry) if self.sg is not None else None
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.core, self.clip)
        self.opt.step()
        self.state = (h.detach() * carry, c.detach() * carry)
        return loss.detach()


def _torch_module(torch, net):
    """An ``nn.Sequential`` with the layers and current weights of a minidni Sequential (Linear, BatchNorm, ReLU)."""
    nn = torch.nn
    layers = []
    for layer in net.layers:
        if isinstance(layer, Linear):
            m = nn.Linear(layer.in_dim, layer.out_dim)
            with torch.no_grad():
                m.weight.copy_(_t(torch, layer.params["W"]).T)
                m.bias.copy_(_t(torch, layer.params["b"]))
        elif isinstance(layer, BatchNorm):
            m = nn.BatchNorm1d(layer.num_features, eps=layer.eps, momentum=layer.momentum)
        elif isinstance(layer, ReLU):
            m = nn.ReLU()
        else:
            raise TypeError(f"no PyTorch twin for {type(layer).__name__}")
        layers.append(m)
    return nn.Sequential(*layers)


class TorchFCN:
    """PyTorch eager twin of a bprop or cdni :class:`~minidni.dni.feedforward.FeedForwardTrainer` on an FCN.

    bprop: forward through every module, cross-entropy, backward, one Adam step per
    module. cdni: module by module, forward, the SG ``Linear([h, onehot(y)]) -> h``
    (zero-initialised, per-example units) predicts the gradient, backward and
    update at once, and the SG below regresses onto the module's input gradient.
    """

    def __init__(self, ours, *, adam: str = "default", num_classes: int = 10):
        torch = self.torch = require_torch()
        self.method, self.num_classes = ours.method, num_classes
        options = {"fused": True} if adam == "fused" else {}
        self.modules = [_torch_module(torch, m.net) for m in ours.modules]
        self.opts = [torch.optim.Adam(m.parameters(), lr=o.optimizer.lr, **options)
                     for m, o in zip(self.modules, ours.modules)]
        self.sgs = [_torch_module(torch, s.net) for s in ours.synthesizers]
        self.sg_opts = [torch.optim.Adam(m.parameters(), lr=s.lr, **options) for m, s in zip(self.sgs, ours.synthesizers)]

    def step(self, x, y):
        torch = self.torch
        F = torch.nn.functional
        if self.method == "bprop":
            h = x
            for m in self.modules:
                h = m(h)
            loss = F.cross_entropy(h, y)
            loss.backward()
            for opt in self.opts:
                opt.step()
                opt.zero_grad()
            return loss.detach()
        n = x.shape[0]
        code = F.one_hot(y, self.num_classes).to(x.dtype)
        h, below = x, None  # below: the SG under this module's input and its raw prediction
        for i, (m, opt) in enumerate(zip(self.modules, self.opts)):
            h_in = h.detach().requires_grad_(i > 0)
            out = m(h_in)
            if i == len(self.modules) - 1:
                loss = F.cross_entropy(out, y)
                loss.backward()
                raw = None
            else:
                raw = self.sgs[i](torch.cat([out.detach(), code], dim=1))  # per-example units
                out.backward(raw.detach() / n)
            opt.step()
            opt.zero_grad()
            if below is not None:  # the SG below learns module i's input gradient (bootstrapped)
                sg_opt, raw_below = below
                ((raw_below - h_in.grad * n) ** 2).sum().div(2 * n).backward()
                sg_opt.step()
                sg_opt.zero_grad()
            below = (self.sg_opts[i], raw) if raw is not None else None
            h = out
        return loss.detach()


# -- measurement ------------------------------------------------------------------------------------
def _lstm_item(torch, name, shape, rng, onednn=True):
    """(ours, theirs) closures: one LSTM forward+backward each, same weights and data.

    ``onednn=False``: PyTorch with oneDNN switched off (``torch.backends.mkldnn.flags``), so
    ``nn.LSTM`` runs ATen's own cell (its BLAS for the products, one kernel per step for the
    gates) instead of oneDNN's fused LSTM primitive, which it picks by default on the CPU.
    """
    T, N, D, H = shape
    host = {"x": rng.standard_normal((T, N, D)), "h0": rng.standard_normal((N, H)) * 0.5,
            "c0": rng.standard_normal((N, H)) * 0.5, "Wx": rng.standard_normal((D, 4 * H)) / math.sqrt(D),
            "Wh": rng.standard_normal((H, 4 * H)) / math.sqrt(H), "b": np.zeros(4 * H),
            "dhs": rng.standard_normal((T, N, H)), "dcT": rng.standard_normal((N, H))}
    a = {k: v.astype(np.float32) for k, v in host.items()}
    ws = Workspace()
    out = (np.empty_like(a["Wx"]), np.empty_like(a["Wh"]), np.empty_like(a["b"]))

    def ours():
        _, _, cache = lstm_forward(a["x"], a["h0"], a["c0"], a["Wx"], a["Wh"], a["b"], workspace=ws)
        lstm_backward(a["dhs"], a["dcT"], cache, input_grad=False, out=out)

    lstm = torch.nn.LSTM(D, H)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.from_numpy(a["Wx"].T))
        lstm.weight_hh_l0.copy_(torch.from_numpy(a["Wh"].T))
        lstm.bias_ih_l0.zero_()
        lstm.bias_hh_l0.zero_()
    t = {k: torch.from_numpy(v) for k, v in a.items()}
    h0, c0 = t["h0"][None].clone().requires_grad_(), t["c0"][None].clone().requires_grad_()

    def theirs():
        with torch.backends.mkldnn.flags(enabled=onednn):
            hs, (_, cT) = lstm(t["x"], (h0, c0))
            torch.autograd.backward([hs, cT], [t["dhs"], t["dcT"][None]])
        lstm.zero_grad()
        h0.grad = c0.grad = None

    flops = 3 * T * 2 * N * 4 * H * (D + H)  # forward x Wx + h Wh per step; the backward twice that
    suffix, note = ("", "") if onednn else ("_no_onednn", ", PyTorch without oneDNN")
    return {"name": f"lstm_{name}{suffix}", "work": f"LSTM forward+backward T={T} N={N} D={D} H={H}{note}",
            "unit": "calls", "flops": flops}, ours, theirs


def _copy_item(torch, mode, cfg, seed, adam, steps):
    """(ours, theirs) closures: ``steps`` Copy training windows each, the same windows."""
    ours_tr = RecurrentTrainer(IN_CHANNELS, OUT_CHANNELS, cfg["hidden"], mode=mode, lr=cfg["lr"],
                               rng=np.random.default_rng(seed))
    theirs_tr = TorchCopyTrainer(ours_tr, adam=adam)
    curriculum = Curriculum("copy", start_length=cfg["length"], max_length=cfg["length"])
    stream = CopyTaskStream(curriculum, cfg["batch"], rng=np.random.default_rng([seed, 1]))

    def block():
        windows = [stream.next_window(cfg["T"]) for _ in range(steps)]
        return [(backend.to_device(w.x), backend.to_device(w.target), backend.to_device(w.mask), w) for w in windows]

    data = {}

    def prepare():
        data["windows"] = block()

    def ours():
        for x, target, mask, w in data["windows"]:
            ours_tr.train_window(x, lambda logits: copy_loss(logits, target, mask), episode_end=w.episode_end)
        ours_tr.collect_diagnostics()

    def theirs():
        for _, _, _, w in data["windows"]:
            theirs_tr.train_window(w.x, w.target, w.mask, w.episode_end)

    return {"name": f"copy_{mode}", "work": f"Copy training window {mode} H={cfg['hidden']} B={cfg['batch']} "
            f"T={cfg['T']} (RecurrentTrainer.train_window + copy_loss)", "unit": "windows",
            "per_call": steps, "prepare": prepare}, ours, theirs


def _fcn_item(torch, method, cfg, seed, adam):
    rng = np.random.default_rng(seed)
    nets = models.fcn(cfg["layers"], rng=rng)
    ours_tr = build_trainer(nets, method=method, in_shape=(784,), lr=cfg["lr"], rng=rng, seed=seed)
    theirs_tr = TorchFCN(ours_tr, adam=adam)
    data_rng = np.random.default_rng([seed, 1])
    x = data_rng.random((cfg["batch"], 784), dtype=np.float32)
    y = data_rng.integers(0, 10, cfg["batch"])
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    return ({"name": f"fcn_{method}", "work": f"MNIST FCN-{cfg['layers']} training step {method} batch {cfg['batch']}",
             "unit": "steps"}, lambda: ours_tr.step(x, y), lambda: theirs_tr.step(xt, yt))


def _time(fn, reps: int) -> float:
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def measure(args: argparse.Namespace) -> dict:
    """Build every item, run the interleaved rounds; returns the JSON-ready result."""
    torch = require_torch()
    from threadpoolctl import threadpool_info, threadpool_limits  # noqa: PLC0415  (the bench extra)

    backend.set_backend("numpy")
    torch.set_num_threads(args.threads)
    load_start = load_average()
    lstm_shapes, copy_cfg, fcn_cfg = ((QUICK_LSTM, QUICK_COPY, QUICK_FCN) if args.quick
                                      else (LSTM_SHAPES, COPY, FCN))
    rng = np.random.default_rng(args.seed)
    warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")  # mkldnn.flags, every call
    items = [_lstm_item(torch, name, shape, rng, onednn) for name, shape in lstm_shapes.items()
             for onednn in (True, False)]
    items += [_copy_item(torch, mode, copy_cfg, args.seed, args.torch_adam, args.windows)
              for mode in ("bptt", "dni", "dni-aux")]
    items += [_fcn_item(torch, method, fcn_cfg, args.seed, args.torch_adam) for method in ("bprop", "cdni")]
    reps = {f"lstm_{shape}{suffix}": n for shape, n in (("copy", args.steps), ("ptb", max(1, args.steps // 4)))
            for suffix in ("", "_no_onednn")}
    times = {info["name"]: {"ours": [], "theirs": []} for info, _, _ in items}
    with threadpool_limits(limits=args.threads, user_api="blas"):
        blas = threadpool_info()
        for rnd in range(args.rounds + 1):  # round 0: untimed warm-up
            for info, ours, theirs in items:
                n = reps.get(info["name"], 1 if "prepare" in info else args.steps)
                sides = [("ours", ours), ("theirs", theirs)]
                if "prepare" in info:
                    info["prepare"]()  # the same fresh windows for both sides, made outside the timed region
                for side, fn in (sides if rnd % 2 else sides[::-1]):
                    seconds = _time(fn, n) / info.get("per_call", 1)
                    if rnd:
                        times[info["name"]][side].append(seconds)
    rows = []
    for info, _, _ in items:
        t = times[info["name"]]
        ratios = [b / a for a, b in zip(t["ours"], t["theirs"])]
        ours_s, theirs_s = statistics.median(t["ours"]), statistics.median(t["theirs"])
        row = {"name": info["name"], "work": info["work"], "unit": info["unit"],
               "minidni_seconds": ours_s, "torch_seconds": theirs_s,
               "minidni_per_second": 1.0 / ours_s, "torch_per_second": 1.0 / theirs_s,
               "ratio": statistics.median(ratios), "ratio_min_max": [min(ratios), max(ratios)],
               "minidni_round_seconds": t["ours"], "torch_round_seconds": t["theirs"]}
        if "flops" in info:
            row["minidni_gflops"], row["torch_gflops"] = info["flops"] / ours_s / 1e9, info["flops"] / theirs_s / 1e9
        rows.append(row)
    return {"benchmark": "torch", "command": " ".join([PROG, *args.argv]) if args.argv else PROG,
            "config": {"threads": args.threads, "rounds": args.rounds, "steps": args.steps,
                       "windows_per_block": args.windows, "seed": args.seed, "quick": args.quick,
                       "torch_adam": args.torch_adam, "lstm_shapes": lstm_shapes, "copy": copy_cfg, "fcn": fcn_cfg},
            "ratio_definition": "PyTorch seconds / minidni seconds for the same work (above 1: minidni is faster); "
                                "median of the per-round ratios",
            "timing": "interleaved rounds after an untimed warm-up round, sides alternating who goes first; "
                      "time.perf_counter; medians over rounds",
            "machine": _machine(torch, blas, load_start), "items": rows}


def _machine(torch, blas: list, load_start) -> dict:
    removed = json.loads(os.environ.get(REMOVED_ENV, "{}"))
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "torch": torch.__version__,
            "numpy_blas": [{k: d.get(k) for k in ("internal_api", "version", "architecture", "num_threads",
                                                  "threading_layer")} for d in blas if d.get("user_api") == "blas"],
            "blas_env_removed_for_this_process": removed,
            "blas_env_now": {k: os.environ[k] for k in BLAS_ENV if k in os.environ},
            "thread_env": {k: os.environ[k] for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
                           if k in os.environ},
            "torch_threads": torch.get_num_threads(),
            "torch_blas": _torch_blas(torch),
            "cupy_gpu_available": backend.cupy_available(),
            "cuda_note": "CPU only: the CuPy-vs-PyTorch-CUDA comparison needs a GPU with both installed",
            "load_average_start": load_start, "load_average_end": load_average()}


def _torch_blas(torch) -> str:
    """PyTorch's BLAS / LAPACK line of its build configuration (e.g. 'BLAS_INFO=mkl')."""
    found = re.findall(r"(BLAS_INFO=\w+|LAPACK_INFO=\w+|USE_MKL=\w+|USE_MKLDNN=\w+|CPU capability usage: \w+)",
                       torch.__config__.show())
    return ", ".join(dict.fromkeys(found))


def table(result: dict) -> str:
    m = result["machine"]
    kernel = ", ".join(f"{b['internal_api']} {b['version']} {b['architecture']} x{b['num_threads']}"
                       for b in m["numpy_blas"])
    width = max(len(r["work"]) for r in result["items"])
    lines = [f"minidni vs PyTorch {m['torch']} eager, {result['config']['threads']} threads each; NumPy BLAS: {kernel}; "
             f"removed for this process: {m['blas_env_removed_for_this_process'] or 'nothing'}; "
             f"load {m['load_average_start']} -> {m['load_average_end']}",
             f"{'work':<{width}} {'minidni':>10} {'PyTorch':>10} {'ratio':>7}"]
    for r in result["items"]:
        lines.append(f"{r['work']:<{width}} {r['minidni_seconds'] * 1e3:8.2f}ms {r['torch_seconds'] * 1e3:8.2f}ms "
                     f"{r['ratio']:6.2f}x")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    rows = result["items"][::-1]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.6), layout="constrained")
    ratios = [r["ratio"] for r in rows]
    errors = [[r["ratio"] - r["ratio_min_max"][0] for r in rows], [r["ratio_min_max"][1] - r["ratio"] for r in rows]]
    colors = ["tab:green" if v >= 1.0 else "tab:red" for v in ratios]
    ax.barh(range(len(rows)), ratios, xerr=errors, color=colors, alpha=0.8, capsize=3)
    for i, v in enumerate(ratios):  # the value at the bar's left end, clear of the whiskers
        ax.text(0.02, i, f"{v:.2f}x", va="center", ha="left", fontsize=9, fontweight="bold")
    ax.axvline(1.0, color="black", lw=1, ls="--")
    ax.set_yticks(range(len(rows)), [r["work"].split(" (")[0] for r in rows], fontsize=8)
    ax.set_xlabel("PyTorch time / minidni time (above 1: minidni faster); bars: median, whiskers: min-max over rounds")
    m = result["machine"]
    c = result["config"]
    ax.set_title(f"minidni vs PyTorch {m['torch']} eager on the CPU, {c['threads']} thread(s) each, "
                 f"{c['rounds']} interleaved rounds (load average {m['load_average_start'][0]} -> "
                 f"{m['load_average_end'][0]} on {m['cpus']} CPUs)", fontsize=9)
    highs = [r["ratio_min_max"][1] for r in rows]
    ax.set_xlim(0, min(max(highs + [1.0]), 2.0 * max(ratios + [1.0])) * 1.08)
    save_figure(fig, path)
    plt.close(fig)


def _parser() -> argparse.ArgumentParser:
    p = make_parser(PROG, "minidni beside PyTorch eager (same work, same threads, interleaved rounds).")
    p.add_argument("--threads", type=positive_int, default=os.cpu_count() or 1, help="threads for both sides")
    p.add_argument("--rounds", type=positive_int, default=5, help="timed rounds (medians over rounds)")
    p.add_argument("--steps", type=positive_int, default=20,
                   help="calls per round of the LSTM (Copy shape; a quarter of it at the PTB shape) and FCN items")
    p.add_argument("--windows", type=positive_int, default=40, help="Copy windows per round and mode")
    p.add_argument("--torch-adam", choices=("default", "fused"), default="default",
                   help="PyTorch's Adam: its default implementation or fused=True")
    p.add_argument("--keep-blas-env", action="store_true",
                   help=f"keep {' and '.join(BLAS_ENV)} if set (default: re-run without them)")
    p.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test, not a measurement)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the weights and data")
    p.add_argument("--out", type=output_path, default=Path("figures/bench_torch.json"),
                   help="JSON file to write; the chart goes next to it as .png")
    return p


def _reexec_without_blas_env(argv: list[str]) -> None:
    """Replace this process by the same command without the BLAS overrides (once; NumPy reloads clean)."""
    removed = {k: os.environ[k] for k in BLAS_ENV if k in os.environ}
    if not removed or REMOVED_ENV in os.environ:
        return
    env = {k: v for k, v in os.environ.items() if k not in BLAS_ENV}
    env[REMOVED_ENV] = json.dumps(removed)
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", "minidni.bench", "torch", *argv], env)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args = parse_or_exit(parser, argv)
    if isinstance(args, int):  # --help, or a bad option already reported in one line
        return args
    args.argv = argv
    if args.quick:
        args.rounds, args.steps, args.windows = min(args.rounds, 2), min(args.steps, 2), min(args.windows, 3)

    def body() -> int:
        prepare_out_file(args.out)
        require_torch()
        if not args.keep_blas_env:
            _reexec_without_blas_env(argv)
        result = measure(args)
        print(table(result))
        write_json(args.out, result)
        plot(result, args.out.with_suffix(".png"))
        print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
        return 0

    return run_command(PROG, body)
