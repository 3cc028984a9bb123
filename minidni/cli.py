"""Shared command-line plumbing: common options, range checks, one-line errors.

Every command (``python -m minidni.run TASK``, ``python -m minidni.bench NAME``)
builds an ``argparse`` parser, adds :func:`add_common_args`, and runs its body
inside :func:`run_command`, which turns expected failures (bad options, missing
data, unusable backend, diverged training) into one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Sequence

from minidni import backend


class UsageError(ValueError):
    """A bad option or input value; the message names the value and the accepted range."""


class TrainingDiverged(RuntimeError):
    """Training produced NaN/inf; the message says which quantity, at which step, what to try."""


MAX_COUNT = 10**9          # the largest count any option accepts (steps, sizes, repeats)
MAX_SEED = 2**32 - 1       # seeds are unsigned 32-bit, so every library that takes one accepts them


def _type(name: str, accepted: str, convert: Callable[[str], object], ok: Callable[[object], bool], lo, hi):
    """An argparse ``type`` that converts ``text`` and checks it; every error names the value and ``accepted``.

    The type carries ``accepted``, ``lo`` and ``hi``, so the bad-input tests can derive values to try.
    """

    def parse(text: str):
        try:
            value = convert(text)
        except (ValueError, OverflowError):
            what = "an integer" if name == "int" else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {what} (accepted: {accepted})") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{text} is out of range (accepted: {accepted})")
        return value

    parse.__name__ = name
    parse.accepted, parse.lo, parse.hi = accepted, lo, hi  # type: ignore[attr-defined]
    return parse


def int_range(lo: int, hi: int = MAX_COUNT) -> Callable[[str], int]:
    """Integers ``lo <= n <= hi``."""
    return _type("int", f"an integer from {lo} to {hi}", int, lambda v: lo <= v <= hi, lo, hi)


def float_range(lo: float, hi: float = math.inf, *, lo_open: bool = False) -> Callable[[str], float]:
    """Finite floats in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``); nan and inf are always refused."""
    low = f"> {lo:g}" if lo_open else f">= {lo:g}"
    accepted = f"a finite number {low}" + (f" and <= {hi:g}" if math.isfinite(hi) else "")
    return _type("float", accepted, float,
                 lambda v: math.isfinite(v) and (v > lo if lo_open else v >= lo) and v <= hi, lo, hi)


positive_int = int_range(1)
nonnegative_int = int_range(0)
seed_int = int_range(0, MAX_SEED)
positive_float = float_range(0.0, lo_open=True)
nonnegative_float = float_range(0.0)
probability = float_range(0.0, 1.0)


def positive_int_or_auto(text: str) -> int | str:
    """``auto`` or an integer from 1 (e.g. ``--steps-per-call``)."""
    if text == "auto":
        return text
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not accepted "
                                         f"(accepted: {positive_int_or_auto.accepted})") from None


positive_int_or_auto.__name__ = "int"  # bad values as for an int option (tests/test_cli_bad_inputs.py)
positive_int_or_auto.accepted = f"auto or {positive_int.accepted}"  # type: ignore[attr-defined]
positive_int_or_auto.lo, positive_int_or_auto.hi = positive_int.lo, positive_int.hi  # type: ignore[attr-defined]


# Options added after runs were first recorded, at the values that mean "as before": left out of the option
# records that --resume and a grid's reuse compare (comparable_options), so older records still match.
LATER_DEFAULTS = {"sg_target": "bootstrap", "sg_horizon": None, "sg_lambda": None}


def comparable_options(options: dict) -> dict:
    """``options`` without the :data:`LATER_DEFAULTS` entries that are at their default."""
    return {k: v for k, v in options.items() if k not in LATER_DEFAULTS or v != LATER_DEFAULTS[k]}


def output_path(text: str) -> Path:
    """A non-empty path for ``--out``/``--figures`` (an empty one would silently mean the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not a path (accepted: a non-empty folder or file name)")
    if "\0" in text:
        raise argparse.ArgumentTypeError(f"{text!r} contains a NUL byte (accepted: a path without one)")
    return Path(text)


def prepare_out_dir(path: Path, option: str = "--out") -> Path:
    """Create ``path`` (and its parents) and check it is a writable folder, before any work starts.

    Raises UsageError naming the option and the reason: a file where a folder is
    expected, a folder that cannot be created (read-only, under a file, a name too
    long), or one that cannot be written.
    """
    try:
        if path.exists() and not path.is_dir():
            raise UsageError(f"{option} {path}: is a file, not a folder "
                             "(accepted: a folder that exists or can be created)")
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot create or write this folder ({exc.strerror or exc}); "
                         "accepted: a folder that can be created and written") from None
    return path


def prepare_out_file(path: Path, option: str = "--out") -> Path:
    """Check that the file ``path`` can be written (its folder is created), before any work starts."""
    if path.is_dir():
        raise UsageError(f"{option} {path}: is a folder (accepted: a file name, e.g. {path / 'result.json'})")
    prepare_out_dir(path.parent, option=f"{option} {path}: its folder")
    return path


def available_memory() -> int:
    """Bytes of memory available to a new allocation (Linux: MemAvailable; elsewhere physical pages)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.3g} GiB" if nbytes >= 2**27 else f"{nbytes / 2**20:.3g} MiB"


def check_memory(nbytes: float, what: str, hint: str) -> None:
    """UsageError when ``what`` would need more than the memory available (one line: how much, and ``hint``)."""
    available = available_memory()
    if nbytes > available:
        raise UsageError(f"{what} would need about {_gib(nbytes)} of memory, more than the {_gib(available)} "
                         f"available here; {hint}")


def add_common_args(parser: argparse.ArgumentParser, *, default_out: str) -> None:
    """Options every training command shares: backend, seed, output folder, data folder."""
    parser.add_argument("--backend", choices=backend.BACKENDS,
                        default=os.environ.get(backend.ENV_VAR, "numpy") or "numpy",
                        help="array backend (default: $MINIDNI_BACKEND or numpy)")
    parser.add_argument("--seed", type=seed_int, default=0, help=f"random seed, 0 to {MAX_SEED} (default 0)")
    parser.add_argument("--out", type=output_path, default=Path(default_out),
                        help=f"output folder for summary.json, figures, checkpoints (default {default_out})")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="data folder (default: $MINIDNI_DATA, then the user cache folder)")


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` to an option's help unless the help already names its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        return text if "default" in text else super()._get_help_string(action)


def make_parser(prog: str, description: str) -> argparse.ArgumentParser:
    return _Parser(prog=prog, description=description, formatter_class=_DefaultsFormatter)


def parse_or_exit(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace | int:
    """``parser.parse_args(argv)`` (``sys.argv[1:]`` when None), or the code argparse exited with: 0 after
    ``--help``, 2 after a bad option (its one line already printed). A command's ``main`` returns the int."""
    try:
        return parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:
        return int(exc.code or 0)


def command_main(prog: str, parser: argparse.ArgumentParser, argv: Sequence[str] | None,
                 body: Callable[[argparse.Namespace], int | None]) -> int:
    """A command's ``main``: parse ``argv`` (:func:`parse_or_exit`), then ``body(args)`` as :func:`run_command`
    runs it; argparse's exit code instead when it stopped (``--help``, a bad option)."""
    args = parse_or_exit(parser, argv)
    if isinstance(args, int):  # --help, or a bad option already reported in one line
        return args
    return run_command(prog, lambda: body(args))


def run_command(prog: str, body: Callable[[], int | None]) -> int:
    """Run ``body``; expected failures become ``prog: error: ...`` and exit 2."""
    # Imported here so that the data package stays optional for commands that do not use it.
    from minidni.data import DataError
    from minidni.io import CheckpointError

    try:
        return body() or 0
    except (UsageError, backend.BackendError, DataError, TrainingDiverged, CheckpointError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; files already written are intact (use --resume where offered)",
              file=sys.stderr)
        return 130


def dispatch(prog: str, commands: dict[str, str], argv: Sequence[str] | None) -> int:
    """``prog NAME args...``: import module ``commands[NAME]`` and call its ``main(args)``."""
    import importlib

    argv = list(sys.argv[1:] if argv is None else argv)
    names = ", ".join(commands)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: {prog} {{{names}}} [options]\n\nrun `{prog} NAME --help` for a command's options")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in commands:
        print(f"{prog}: error: unknown command {name!r}; choose one of: {names}", file=sys.stderr)
        return 2
    module_name, _, func = commands[name].partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, func or "main")(rest)
