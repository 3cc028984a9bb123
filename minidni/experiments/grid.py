"""Run the cells of an experiment grid (``table1``, ``table2``): local processes, or Ray tasks.

Every cell is one ``python -m minidni.run TASK ...`` command writing into its own
folder. Two executors run them, ``workers`` at a time, and hand each result back
as soon as its cell finishes (:func:`run_cells` yields in completion order):

``inline``
    one cell after another in this process (``workers`` is ignored): for a
    debugger, and for tests that replace a data loader.
``processes``
    a subprocess per cell on this machine, writing straight into the cell's
    folder, so an interrupted cell keeps its checkpoints and ``--resume``
    continues it.
``ray``
    a Ray task per cell (one CPU each) on a local Ray instance or, with
    ``ray_address``, on a cluster. The task runs the same command in a temporary
    folder on whichever node it lands on and returns every file the run wrote;
    the driver writes them under the cell's folder, so nothing is left on a
    worker node's disk. A cell interrupted half-way restarts (its checkpoints
    were on the worker); finished cells are reused by the grid's ``--resume``.

Each cell runs with one BLAS thread (``OPENBLAS_NUM_THREADS=1`` and friends), so
``workers`` cells share the cores without oversubscribing them. A failed cell is
a result like any other (its return code and last error line): the others go on.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from minidni.cli import UsageError, comparable_options, positive_float, positive_int, prepare_out_dir
from minidni.io import write_json, write_text

__all__ = ["EXECUTORS", "Cell", "CellResult", "add_grid_args", "check_distinct", "check_extra", "choose_executor",
           "finished_summary", "fresh_cell", "parse_cell_options", "plain_name", "read_summary", "run_cells", "run_grid",
           "write_grid"]

EXECUTORS = ("auto", "inline", "processes", "ray")
ONE_BLAS_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass
class Cell:
    """One run of a grid: ``argv`` for ``python -m minidni.run`` (without ``--out``), its folder ``out``."""

    key: tuple
    argv: list[str]
    out: Path


@dataclass
class CellResult:
    """How a cell's command ended: its exit code and, when it failed, its last line on stderr."""

    returncode: int
    error: str | None


def add_grid_args(parser: argparse.ArgumentParser, *, default_workers: int) -> None:
    """``--workers``, ``--executor``, ``--ray-address``, ``--ray-timeout``: how a grid's cells run."""
    parser.add_argument("--workers", type=positive_int, default=default_workers,
                        help="cells in parallel (one process or Ray task each, one BLAS thread each)")
    parser.add_argument("--executor", choices=EXECUTORS, default="auto",
                        help="inline (one by one in this process), processes on this machine, or Ray tasks "
                             "(auto: Ray when installed and --workers > 1 or --ray-address is given)")
    parser.add_argument("--ray-address", default=None, help="run the cells on this Ray cluster (HEAD:PORT)")
    parser.add_argument("--ray-timeout", type=positive_float, default=None,
                        help="seconds to reach --ray-address before giving up (default 30)")


def check_distinct(args: argparse.Namespace, names: Sequence[str]) -> None:
    """UsageError when a list option repeats a value: the same cell would run twice and count twice."""
    for name in names:
        values = getattr(args, name)
        repeated = sorted({v for v in values if values.count(v) > 1}, key=str)
        if repeated:
            raise UsageError(f"--{name.replace('_', '-')} lists {', '.join(map(str, repeated))} more than once "
                             "(accepted: distinct values; a repeated cell would run twice in one folder)")


def plain_name(text: str) -> str:
    """An argparse type for ``--name``: a file name without folders or a leading dot."""
    if not text or "/" in text or text.startswith("."):
        raise argparse.ArgumentTypeError(f"{text!r} is not a plain file name (no folder, no leading dot)")
    return text


def check_extra(extra: str, known: set[str], grid_set: Sequence[str], example: str) -> list[str]:
    """The words of ``--extra``; UsageError if it is no command line or sets (or abbreviates) an option in
    ``grid_set``, which the grid sets for every run itself. ``known``: the runs' option strings."""
    try:
        words = shlex.split(extra)
    except ValueError as exc:
        raise UsageError(f"--extra {extra!r} is not a valid command line ({exc})") from None
    for word in words:
        name = word.split("=", 1)[0]
        if not name.startswith("--"):
            continue
        targets = [name] if name in known else [o for o in known if o.startswith(name)]  # argparse abbreviations
        clash = sorted(set(targets) & set(grid_set))
        if clash:
            raise UsageError(f"--extra may not set {clash[0]} (the grid sets it for every run: use the grid's own "
                             f"option); accepted in --extra: the other options of the task, e.g. {example}")
    return words


def parse_cell_options(parser: argparse.ArgumentParser, argv: Sequence[str], what: str,
                       run_only: Sequence[str]) -> tuple[argparse.Namespace, dict]:
    """``(namespace, options)`` of a cell's command line as its own ``parser`` reads it; ``options`` as its
    summary.json stores them, less ``run_only`` (and :func:`minidni.cli.comparable_options`'s defaults, so
    runs recorded before an option existed still match). UsageError naming ``what`` when it is rejected."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            ns = parser.parse_args(list(argv))
    except SystemExit:
        lines = err.getvalue().strip().splitlines() or ["rejected"]
        raise UsageError(f"the {what} runs would reject their options: {lines[-1]}") from None
    return ns, comparable_options({k: str(v) if isinstance(v, Path) else v for k, v in vars(ns).items()
                                   if k not in run_only})


def fresh_cell(key: tuple, argv: Sequence[str], out: Path, *, executor: str, resume: bool,
               checkpoint: str = "checkpoint.npz") -> Cell:
    """A cell that is about to run: any old summary.json in ``out`` is removed (a failed run must not leave an
    old result behind), and with ``resume`` a local process continues from the checkpoint it finds there."""
    argv = list(argv)
    if executor == "processes" and resume and (out / checkpoint).is_file():
        argv.append("--resume")
    (out / "summary.json").unlink(missing_ok=True)
    return Cell(key=key, argv=argv, out=out)


def finished_summary(out: Path, options: dict, steps: int) -> dict | None:
    """The summary.json in ``out`` if its run finished (all ``steps``, or stopped early) with these options
    and did not diverge, else None."""
    s = read_summary(out / "summary.json")
    if not s:
        return None
    done = s.get("steps") == steps or s.get("stopped_early")
    same = {k: s.get("options", {}).get(k) for k in options} == options
    return s if done and same and not s.get("diverged") else None


def read_summary(path: Path) -> dict:
    """A cell's summary.json, or {} when it is missing or unreadable (e.g. a cell killed while writing it)."""
    try:
        s = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return s if isinstance(s, dict) else {}


def choose_executor(executor: str, workers: int, ray_address: str | None) -> str:
    """``auto``: Ray when it is installed and there is more than one worker or a cluster, else processes."""
    if executor != "auto":
        if executor == "ray":
            from minidni.distributed.pipeline import require_ray  # noqa: PLC0415  (optional dependency)

            require_ray()
        elif ray_address:
            raise UsageError(f"--ray-address {ray_address} needs --executor ray or auto (processes run on this machine)")
        return executor
    if ray_address:
        return "ray"
    if importlib.util.find_spec("ray") is None:
        return "processes"
    return "ray" if workers > 1 else "processes"


def run_cells(cells: Sequence[Cell], *, workers: int, executor: str, ray_address: str | None = None,
              ray_timeout: float | None = None) -> Iterator[tuple[Cell, CellResult]]:
    """Run ``cells`` ``workers`` at a time with ``executor`` ("processes" or "ray"); yield each as it finishes."""
    if executor == "ray":
        yield from _run_on_ray(cells, workers, ray_address, ray_timeout)
    elif executor == "inline":
        yield from _run_inline(cells)
    else:
        yield from _run_as_processes(cells, workers)


def run_grid(prog: str, args: argparse.Namespace, cells: list[dict], *, what: str,
             reused: Callable[[dict], dict | None], grid_cell: Callable[[dict, str], Cell],
             record: Callable[[dict, Cell, CellResult], dict], line: Callable[[dict], str]) -> tuple[list[dict], float]:
    """Run a grid command's ``cells`` (its own dicts, options already checked): ``(records in cell order, seconds)``.

    Makes ``args.out`` and ``args.figures``, takes ``reused(cell)``'s record where it has one, runs the
    others (``grid_cell(cell, executor)``, ``args.workers`` at a time as ``args.executor`` says) and
    prints ``line(record)`` for each as it finishes (``what``: the header's count of runs).
    """
    executor = choose_executor(args.executor, args.workers, args.ray_address)
    prepare_out_dir(args.out)
    prepare_out_dir(args.figures, option="--figures")
    t0 = time.perf_counter()
    done, todo = {}, {}
    for i, cell in enumerate(cells):
        if (r := reused(cell)) is not None:
            done[i] = r
        else:
            todo[i] = cell
    print(f"{prog}: {what} ({len(done)} reused), {args.workers} at a time as {executor}; each run's line appears "
          "when it finishes", flush=True)

    def report(r: dict) -> None:
        print(f"  [{len(done)}/{len(cells)}, {(time.perf_counter() - t0) / 60:.1f} min] {line(r)}"
              f"{' (reused)' if r['reused'] else ''}", flush=True)

    for r in list(done.values()):
        report(r)
    by_key = {(g := grid_cell(cell, executor)).key: (i, cell, g) for i, cell in todo.items()}
    for g, result in run_cells([g for *_, g in by_key.values()], workers=args.workers, executor=executor,
                               ray_address=args.ray_address, ray_timeout=args.ray_timeout):
        i, cell, _ = by_key[g.key]
        done[i] = record(cell, g, result)
        report(done[i])
    return [done[i] for i in range(len(cells))], time.perf_counter() - t0


def write_grid(prog: str, base: Path, runs: list[dict], wall: float, *, markdown: str, payload: dict,
               plot: Callable[[Path], None]) -> int:
    """Write ``base``.md/.json/.png and say so; exit status 1 (after a line on stderr) when a run failed."""
    write_text(base.with_suffix(".md"), markdown)
    write_json(base.with_suffix(".json"), payload)
    plot(base.with_suffix(".png"))
    print(f"{prog}: wrote {base}.md, .json, .png ({wall / 60:.1f} min)", flush=True)
    failed = [r for r in runs if "error" in r]
    if failed:
        print(f"{prog}: error: {len(failed)} of {len(runs)} runs failed (listed above and in {base}.md)",
              file=sys.stderr)
        return 1
    return 0


def _run_inline(cells: Sequence[Cell]) -> Iterator[tuple[Cell, CellResult]]:
    from minidni.run import main  # noqa: PLC0415  (the same entry point as the processes' command line)

    for cell in cells:
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main([*cell.argv, "--out", str(cell.out)])
        yield cell, _result(subprocess.CompletedProcess([], code, "", err.getvalue()))


def _command(argv: Sequence[str], out: str | Path) -> list[str]:
    return [sys.executable, "-m", "minidni.run", *argv, "--out", str(out)]


def _result(proc: subprocess.CompletedProcess) -> CellResult:
    if proc.returncode == 0:
        return CellResult(0, None)
    lines = proc.stderr.strip().splitlines()
    return CellResult(proc.returncode, lines[-1] if lines else f"exit code {proc.returncode}")


def _run_one_process(cell: Cell) -> CellResult:
    proc = subprocess.run(_command(cell.argv, cell.out), env={**os.environ, **ONE_BLAS_THREAD},
                          capture_output=True, text=True)
    return _result(proc)


def _run_as_processes(cells: Sequence[Cell], workers: int) -> Iterator[tuple[Cell, CellResult]]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = {pool.submit(_run_one_process, cell): cell for cell in cells}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield pending.pop(future), future.result()


def run_in_temporary_folder(argv: Sequence[str]) -> tuple[int, str, dict[str, bytes]]:
    """Run ``python -m minidni.run argv`` with ``--out`` a fresh temporary folder; return its exit code, stderr
    and every file it wrote (relative path -> bytes). This is the body of a grid's Ray task."""
    tmp = Path(tempfile.mkdtemp(prefix="minidni-cell-"))
    try:
        proc = subprocess.run(_command(argv, tmp / "out"), env={**os.environ, **ONE_BLAS_THREAD},
                              capture_output=True, text=True)
        files = {str(p.relative_to(tmp / "out")): p.read_bytes()
                 for p in sorted((tmp / "out").rglob("*")) if p.is_file()}
        return proc.returncode, proc.stderr, files
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run_on_ray(cells: Sequence[Cell], workers: int, ray_address: str | None,
                ray_timeout: float | None) -> Iterator[tuple[Cell, CellResult]]:
    from minidni.distributed.pipeline import RAY_CONNECT_TIMEOUT, init_ray, require_ray  # noqa: PLC0415
    from minidni.io import write_bytes  # noqa: PLC0415

    ray = require_ray()
    started = init_ray(ray_address, num_cpus=None if ray_address else workers,
                       timeout=ray_timeout or RAY_CONNECT_TIMEOUT)
    task = ray.remote(num_cpus=1)(run_in_temporary_folder)
    try:
        queue, running = list(cells), {}
        while queue or running:
            while queue and len(running) < workers:
                cell = queue.pop(0)
                running[task.remote(cell.argv)] = cell
            done, _ = ray.wait(list(running), num_returns=1)
            cell = running.pop(done[0])
            code, stderr, files = ray.get(done[0])
            for rel, data in files.items():  # written here, on the driver, as the cell finishes
                write_bytes(cell.out / rel, data)
            yield cell, _result(subprocess.CompletedProcess([], code, "", stderr))
    finally:
        if started:
            ray.shutdown()
