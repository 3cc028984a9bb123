"""``python -m minidni.bench gpu --out DIR``: everything CuPy, run once on a machine with an NVIDIA GPU.

    python -m minidni.bench gpu --out runs/gpu        # about 8 minutes; logs and JSON under runs/gpu

In order, each with its own time limit inside ``--budget`` seconds (a step that no
longer fits is recorded as skipped, never silently dropped):

1. ``install``: CuPy, if it is not importable: the ``gpu`` extra's requirement
   (``cupy-cuda12x``), or ``gpu-cuda13``'s where ``nvidia-smi`` reports CUDA 13 or later;
2. ``device``: ``set_backend("cupy")`` and the device's name and memory;
3. ``tests``: ``pytest -m "cupy or gpu"`` on the checkout's ``tests/``: the CuPy suite on
   real CuPy and the tests that need a real GPU (e.g. the fused kernels of
   :mod:`minidni.kernels`, which the stand-in cannot run), with a JUnit XML report;
4. ``bench-layers``, ``bench-recurrent``, ``bench-feedforward``: the benchmarks with
   ``--backend cupy``, JSON in DIR;
5. ``bench-torch``: the PyTorch CUDA comparison, where ``python -m minidni.bench torch`` exists
   and has a ``--device`` (or ``--backend``) option; else recorded as skipped, saying why;
6. ``copy``: the main job, ``python -m minidni.run copy --backend cupy`` (outputs in DIR/copy),
   last because its time on a GPU is the least known: it gets what the budget has left, and
   if that is not enough its checkpoints (every 1000 windows) stay in DIR/copy.

Writes ``DIR/logs/<step>.log`` (stdout and stderr of each step), ``DIR/gpu_check.json``
(the GPU as ``nvidia-smi`` names it, each step's command, exit code, seconds and
status) and prints one line per step. Without an NVIDIA GPU it stops before doing
anything, with one line saying so (exit 2).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from minidni.cli import UsageError, command_main, make_parser, output_path, positive_int, prepare_out_dir
from minidni.io import write_json

PROG = "python -m minidni.bench gpu"
DEFAULT_BUDGET = 480  # seconds: the whole check fits in about 8 minutes
CHECKOUT = Path(__file__).resolve().parents[2]  # the repository root of an editable install (tests/ beside it)
DEVICE_CHECK = ("from minidni import backend; xp = backend.set_backend('cupy'); "
                "p = xp.cuda.runtime.getDeviceProperties(xp.cuda.Device().id); "
                "print('cupy', xp.__version__, p['name'].decode(), round(p['totalGlobalMem'] / 2**30, 1), 'GiB')")


class Step(NamedTuple):
    """One command of the check: ``name`` (also its log's name), ``argv``, its own time limit in seconds;
    ``skip``: why it cannot run here (recorded as skipped, with that reason)."""
    name: str
    argv: list[str]
    timeout_s: int
    skip: str | None = None


def nvidia_gpus() -> tuple[list[str], str | None]:
    """(``nvidia-smi -L`` lines, CUDA version the driver reports or None); ``([], reason)`` without a GPU."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return [], "nvidia-smi not found"
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
        header = subprocess.run([smi], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [], f"nvidia-smi failed ({exc})"
    gpus = [line.strip() for line in listing.stdout.splitlines() if line.startswith("GPU ")]
    if listing.returncode != 0 or not gpus:
        return [], f"nvidia-smi lists no GPU ({(listing.stderr or listing.stdout).strip()[:200] or 'no output'})"
    cuda = re.search(r"CUDA Version:\s*([0-9.]+)", header)
    return gpus, cuda.group(1) if cuda else None


def cupy_requirement(cuda_version: str | None) -> str:
    """The requirement of the ``gpu`` extra (``gpu-cuda13`` for CUDA >= 13), read from the package metadata."""
    extra = "gpu-cuda13" if cuda_version and int(cuda_version.split(".")[0]) >= 13 else "gpu"
    fallback = "cupy-cuda13x>=13" if extra == "gpu-cuda13" else "cupy-cuda12x>=13"
    try:
        requires = importlib.metadata.requires("minidni") or []
    except importlib.metadata.PackageNotFoundError:
        return fallback
    for req in requires:
        spec, _, marker = req.partition(";")
        if re.search(rf"extra\s*==\s*['\"]{extra}['\"]", marker):
            return spec.strip()
    return fallback


def plan(out: Path, *, python: str, install: str | None, tests_dir: Path | None, torch_help: str | None,
         quick: bool = False) -> list[Step]:
    """The commands of the check, in order.

    ``install``: the requirement to pip-install (None: CuPy is importable). ``tests_dir``:
    the checkout's tests (None: not a checkout, no tests step). ``torch_help``: the output of
    ``python -m minidni.bench torch --help`` (None: that benchmark does not exist); its options
    decide how it is asked for CUDA. ``quick``: tiny sizes, a smoke test of this script.
    """
    steps = []
    if install:
        steps.append(Step("install", [python, "-m", "pip", "install", install], 150))
    steps.append(Step("device", [python, "-c", DEVICE_CHECK], 60))
    if tests_dir is not None:
        steps.append(Step("tests", [python, "-m", "pytest", "-q", "-m", "cupy or gpu", "-p", "no:cacheprovider",
                                    "--continue-on-collection-errors",
                                    f"--junitxml={out / 'tests.xml'}", str(tests_dir)], 150))
    quick_flag = ["--quick"] if quick else []
    for name in ("layers", "recurrent"):
        steps.append(Step(f"bench-{name}", [python, "-m", "minidni.bench", name, "--backend", "cupy", *quick_flag,
                                            "--out", str(out / f"bench_{name}.json")], 90))
    ff = ["--rounds", "2", "--steps", "3", "--sg-width", "32"] if quick else []
    steps.append(Step("bench-feedforward", [python, "-m", "minidni.bench", "feedforward", "--backend", "cupy", *ff,
                                            "--out", str(out / "bench_feedforward.json")], 90))
    if torch_help is not None:
        device = (["--device", "cuda"] if "--device" in torch_help else
                  ["--backend", "cupy"] if "--backend" in torch_help else None)
        steps.append(Step("bench-torch", [python, "-m", "minidni.bench", "torch", *(device or []), *quick_flag,
                                          "--out", str(out / "bench_torch.json")], 90,
                          None if device else "python -m minidni.bench torch has no --device or --backend "
                                              "option: it compares on the CPU only, no CUDA comparison"))
    # last: the longest and least predictable (20000 windows per mode); it gets what the budget has left
    copy = [python, "-m", "minidni.run", "copy", "--backend", "cupy", "--no-progress", "--out", str(out / "copy")]
    steps.append(Step("copy", copy + (["--steps", "40", "--hidden", "16"] if quick else []), 300))
    return steps


def _run_step(step: Step, log: Path, limit: float) -> dict:
    start = time.perf_counter()
    with open(log, "w") as f:
        try:
            code = subprocess.run(step.argv, stdout=f, stderr=subprocess.STDOUT, timeout=limit).returncode
            status = "ok" if code == 0 else "failed"
        except subprocess.TimeoutExpired:
            code, status = None, f"timed out after {limit:.0f} s"
    return {"name": step.name, "command": step.argv, "returncode": code, "status": status,
            "seconds": round(time.perf_counter() - start, 1), "log": str(log)}


def _parser() -> argparse.ArgumentParser:
    p = make_parser(PROG, "On a machine with an NVIDIA GPU: CuPy installed if needed, the CuPy tests, the main job "
                          "and the benchmarks on --backend cupy, logs and JSON in --out.")
    p.add_argument("--out", type=output_path, default=Path("runs/gpu"), help="folder for the logs and JSON")
    p.add_argument("--budget", type=positive_int, default=DEFAULT_BUDGET,
                   help="seconds for the whole check; a step that no longer fits is skipped")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of this script, not a measurement")
    return p


def _torch_help(python: str) -> str | None:
    from minidni.bench.__main__ import BENCHMARKS  # noqa: PLC0415

    if "torch" not in BENCHMARKS:
        return None
    done = subprocess.run([python, "-m", "minidni.bench", "torch", "--help"], capture_output=True, text=True,
                          timeout=60)
    return done.stdout


def main(argv: Sequence[str] | None = None) -> int:
    def body(args: argparse.Namespace) -> int:
        gpus, cuda = nvidia_gpus()
        if not gpus:
            raise UsageError(f"no NVIDIA GPU on this machine ({cuda}); run it on one that has a GPU and its driver")
        out = prepare_out_dir(args.out).resolve()
        (out / "logs").mkdir(exist_ok=True)
        python = sys.executable
        install = None if importlib.util.find_spec("cupy") else cupy_requirement(cuda)
        tests = CHECKOUT / "tests"
        steps = plan(out, python=python, install=install, tests_dir=tests if tests.is_dir() else None,
                     torch_help=_torch_help(python), quick=args.quick)
        deadline = time.perf_counter() + args.budget
        report = {"gpus": gpus, "cuda_driver_version": cuda, "python": platform.python_version(),
                  "budget_s": args.budget, "quick": args.quick, "steps": []}
        for step in steps:
            left = deadline - time.perf_counter()
            if step.skip:
                result = {"name": step.name, "command": step.argv, "returncode": None, "seconds": 0.0,
                          "status": f"skipped: {step.skip}"}
            elif left < 10:
                result = {"name": step.name, "command": step.argv, "returncode": None, "seconds": 0.0,
                          "status": f"skipped: {args.budget} s budget spent"}
            else:
                result = _run_step(step, out / "logs" / f"{step.name}.log", min(step.timeout_s, left))
            report["steps"].append(result)
            write_json(out / "gpu_check.json", report)  # after every step: an interrupted check keeps its record
            print(f"{PROG}: {step.name}: {result['status']} ({result['seconds']:.0f} s)", flush=True)
        not_run = [st.name for st in steps if st.skip]
        failed = [s["name"] for s in report["steps"] if s["status"] != "ok" and s["name"] not in not_run]
        ok = len(steps) - len(failed) - len(not_run)
        print(f"{PROG}: {ok} of {len(steps)} steps ok" + (f"; not ok: {', '.join(failed)}" if failed else "")
              + (f"; cannot run here: {', '.join(not_run)}" if not_run else "") + f"; report in {out / 'gpu_check.json'}")
        return 1 if failed else 0

    return command_main(PROG, _parser(), argv, body)


if __name__ == "__main__":
    sys.exit(main())
