"""Shared command-line plumbing: common options, range checks, one-line errors.

Every command (``python -m minidni.run TASK``, ``python -m minidni.bench NAME``)
builds an ``argparse`` parser, adds :func:`add_common_args`, and runs its body
inside :func:`run_command`, which turns expected failures (bad options, missing
data, unusable backend, diverged training) into one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from minidni import backend


class UsageError(ValueError):
    """A bad option or input value; the message names the value and the accepted range."""


class TrainingDiverged(RuntimeError):
    """Training produced NaN/inf; the message says which quantity, at which step, what to try."""


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer (accepted: 1 or more)")
    return value


def nonnegative_float(text: str) -> float:
    value = float(text)
    if not value >= 0.0:
        raise argparse.ArgumentTypeError(f"{text} is not a non-negative number (accepted: 0 or more)")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0.0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number (accepted: > 0)")
    return value


def probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a probability (accepted: 0 to 1)")
    return value


def add_common_args(parser: argparse.ArgumentParser, *, default_out: str) -> None:
    """Options every training command shares: backend, seed, output folder, data folder."""
    parser.add_argument("--backend", choices=backend.BACKENDS,
                        default=os.environ.get(backend.ENV_VAR, "numpy") or "numpy",
                        help="array backend (default: $MINIDNI_BACKEND or numpy)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", type=Path, default=Path(default_out),
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
