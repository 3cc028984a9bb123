"""Every option of every command, driven with bad values: one line naming the value and what is accepted, exit 2.

The table is derived from the commands' own parsers (``minidni.run``'s tasks,
``minidni.bench``'s benchmarks, ``minidni.data``), so an option added later is
checked too: an option that takes a value must use one of :mod:`minidni.cli`'s
checked types, a ``choices`` list, or be listed in :data:`FREE_FORM` with the
reason its values are checked later. For every typed option the table tries
nan, inf, -inf, a word, a value just outside its range and a huge one; for
choices a name that is not one. Each case runs in an empty folder, which must
stay empty: nothing is half-written.

:data:`SEMANTIC` adds the cases a type cannot see: output folders that cannot be
created or are files, sizes that do not fit in memory, ``--resume`` without a
checkpoint or with a corrupt one, grid options in ``table2 --extra``, repeats.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os

import numpy as np
import pytest

from minidni.bench.__main__ import BENCHMARKS
from minidni.cli import positive_float, positive_int
from minidni.run import TASKS

# options whose values no type can check at parse time, and where they are checked instead
FREE_FORM = {
    "--data-dir": "a folder; a missing or wrong one is a DataError naming the file to put where",
    "--extra": "table2 parses it with the task's own parser before any run starts (SEMANTIC cases)",
    "--ray-address": "checked by connecting, within --ray-timeout (tests/test_distributed.py)",
    "--name": "table2: its own type refuses folders and leading dots",
    "--inject-failure": "a hidden test hook of the pipeline",
    "--sweep-layers": "choices",
}


class _Captured(BaseException):
    """Raised from a patched ``parse_args`` to carry the command's parser out of its ``main``."""

    def __init__(self, parser):
        self.parser = parser


def _entry(spec: str):
    module, _, func = spec.partition(":")
    return getattr(importlib.import_module(module), func or "main")


COMMANDS = {f"run {name}": _entry(spec) for name, spec in TASKS.items()}
COMMANDS.update({f"bench {name}": _entry(spec) for name, spec in BENCHMARKS.items()})
COMMANDS["data download"] = _entry("minidni.data.__main__:main")
PREFIX = {"data download": ["download"]}


def _parser_of(command: str) -> argparse.ArgumentParser:
    original = argparse.ArgumentParser.parse_args

    def capture(self, *args, **kwargs):
        raise _Captured(self)

    argparse.ArgumentParser.parse_args = capture
    try:
        COMMANDS[command](PREFIX.get(command, []))
    except _Captured as c:
        return c.parser
    finally:
        argparse.ArgumentParser.parse_args = original
    raise AssertionError(f"{command} did not parse its arguments")


def _bad_values(action: argparse.Action) -> list[str]:
    t = action.type
    if action.choices is not None:
        return ["bogus-choice"]
    if getattr(t, "__name__", "") == "output_path":
        return [""]
    if getattr(t, "kind", None) == "list":  # comma-separated lists (multinet --modes, --seeds)
        return [",", "bogus-choice"]
    if not hasattr(t, "accepted"):
        return []
    values = ["nan", "inf", "-inf", "abc", "1e999"]
    if t.__name__ == "int":
        values += [str(t.lo - 1), str(t.hi + 1), "2.5"]
    else:
        values += [repr(t.lo - 1.0)] + ([repr(2.0 * t.hi + 1.0)] if math.isfinite(t.hi) else [])
    return values


def _value_options(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if action.option_strings and action.nargs != 0 and action.help != argparse.SUPPRESS:
            yield max(action.option_strings, key=len), action


def _generated_cases():
    cases, untyped = [], []
    for command in COMMANDS:
        for option, action in _value_options(_parser_of(command)):
            values = _bad_values(action)
            if not values and option not in FREE_FORM:
                untyped.append(f"{command} {option}")
            cases += [pytest.param(command, option, v, id=f"{command} {option} {v!r}") for v in values]
    return cases, untyped


CASES, UNTYPED = _generated_cases()


def test_every_option_with_a_value_is_checked():
    assert not UNTYPED, f"options without a checked type, choices or a FREE_FORM reason: {UNTYPED}"
    assert len(CASES) > 300  # the table really covers the commands


@pytest.mark.parametrize("command, option, value", CASES)
def test_bad_value_is_one_line_naming_it(command, option, value, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = COMMANDS[command]([*PREFIX.get(command, []), f"{option}={value}"])  # "=": "-inf" is a value, not an option
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert option in err and (value in err or repr(value) in err), err
    assert "accepted" in err or "choose from" in err, err
    assert not os.listdir(tmp_path), "a refused command wrote files"


# -- cases a type cannot see ---------------------------------------------------------------------
def _tiny_copy(out):
    return ["copy", "--steps", "2", "--hidden", "4", "--batch", "2", "--no-progress", "--no-compare", "--out", str(out)]


def _file(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("x")
    return path


SEMANTIC = {
    # name: (argv builder from tmp_path, words the one line must contain)
    "out is a file": (lambda t: _tiny_copy(_file(t)), ["--out", "is a file"]),
    "out under a file": (lambda t: _tiny_copy(_file(t) / "sub"), ["--out", "cannot create"]),
    "out not creatable": (lambda t: _tiny_copy("/proc/minidni-x"), ["--out", "cannot create"]),
    "out name too long": (lambda t: _tiny_copy(t / ("x" * 300)), ["--out", "cannot create"]),
    "hidden too large for memory": (lambda t: ["copy", "--hidden", "1000000000", "--out", str(t / "o")],
                                    ["--hidden 1000000000", "would need about", "GiB"]),
    "T x batch too large for memory": (lambda t: ["copy", "--T", "100000000", "--batch", "100000", "--out", str(t / "o")],
                                       ["--T 100000000", "would need about"]),
    "mnist layers x width too large": (lambda t: ["mnist", "--layers", "1000", "--width", "1000000", "--out", str(t / "o")],
                                       ["--layers 1000", "would need about"]),
    "resume without checkpoint": (lambda t: [*_tiny_copy(t / "o"), "--resume"], ["--resume", "no checkpoint"]),
    "resume with compare, no checkpoint": (lambda t: ["copy", "--steps", "2", "--hidden", "4", "--no-progress", "--resume",
                                                      "--out", str(t / "o")], ["--resume", "no checkpoint"]),
    "table2 extra sets mode": (lambda t: ["table2", "--modes", "dni", "--extra", "--mode bptt", "--out", str(t / "o")],
                               ["--extra", "--mode"]),
    "table2 extra sets T": (lambda t: ["table2", "--T", "2", "4", "--extra", "--T 3", "--out", str(t / "o")],
                            ["--extra", "--T"]),
    "table2 extra abbreviates mode": (lambda t: ["table2", "--extra", "--mod bptt", "--out", str(t / "o")],
                                      ["--extra", "--mode"]),
    "table2 extra sets out": (lambda t: ["table2", "--extra", "--out x", "--out", str(t / "o")], ["--extra", "--out"]),
    "table2 repeated seeds": (lambda t: ["table2", "--seeds", "0", "0", "--out", str(t / "o")], ["--seeds", "0"]),
    "table2 repeated T": (lambda t: ["table2", "--T", "3", "3", "--out", str(t / "o")], ["--T", "3"]),
    "table2 bad extra option": (lambda t: ["table2", "--extra", "--sg-lr inf", "--out", str(t / "o")],
                                ["--sg-lr", "inf", "accepted"]),
    "table2 cell too large": (lambda t: ["table2", "--T", "100000000", "--out", str(t / "o")], ["would need about"]),
    "table2 unwritable out": (lambda t: ["table2", "--out", "/proc/minidni-x"], ["--out", "cannot create"]),
    "table2 unwritable figures": (lambda t: ["table2", "--figures", str(_file(t)), "--out", str(t / "o")],
                                  ["--figures", "is a file"]),
    "table1 repeated layers": (lambda t: ["table1", "--layers", "3", "3", "--out", str(t / "o")], ["--layers", "3"]),
}


@pytest.mark.parametrize("name", sorted(SEMANTIC))
def test_semantic_bad_input_is_one_line(name, tmp_path, monkeypatch, capsys):
    from minidni.run import main

    build, words = SEMANTIC[name]
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    code = main(build(tmp_path))
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    for word in words:
        assert word in err, (word, err)
    assert not os.listdir(work)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").rglob("*.json"))


@pytest.fixture
def finished_copy_run(tmp_path):
    """A tiny copy run with a checkpoint at its last step, to corrupt."""
    from minidni.run import main

    out = tmp_path / "run"
    assert main([*_tiny_copy(out), "--checkpoint-every", "2"]) == 0
    return out


@pytest.mark.parametrize("damage, words", [
    ("truncate", ["checkpoint.npz", "truncated or corrupt"]),
    ("garbage", ["checkpoint.npz", "truncated or corrupt"]),
    ("no metadata", ["checkpoint.npz", "not a minidni checkpoint"]),
    ("other options", ["different options", "hidden"]),
])
def test_damaged_or_mismatched_checkpoint_is_one_line(finished_copy_run, damage, words, capsys):
    from minidni.io import save_arrays
    from minidni.run import main

    path = finished_copy_run / "checkpoint.npz"
    argv = [*_tiny_copy(finished_copy_run), "--steps", "4", "--resume"]
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "garbage":
        path.write_bytes(b"not a zip file at all")
    elif damage == "no metadata":
        save_arrays(path, {"x": np.zeros(3)})
    else:
        argv += ["--hidden", "6"]
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    for word in words:
        assert word in err, (word, err)


def test_truncated_data_file_is_one_line(tmp_path, capsys):
    """An empty PTB file read with --no-verify (the checksum skipped) stops with the file's name."""
    from minidni.run import main

    (tmp_path / "ptb").mkdir()
    for split in ("train", "valid", "test"):
        (tmp_path / "ptb" / f"ptb.char.{split}.txt").write_text("")
    code = main(["ptb", "--data-dir", str(tmp_path), "--no-verify", "--steps", "2", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "ptb.char.train.txt" in err and "empty or truncated" in err


def test_ptb_T_longer_than_the_streams_is_refused(tmp_path, capsys):
    from minidni.run import main

    (tmp_path / "ptb").mkdir()
    for split in ("train", "valid", "test"):
        (tmp_path / "ptb" / f"ptb.char.{split}.txt").write_text("a b c _ d e \n " * 20)
    code = main(["ptb", "--data-dir", str(tmp_path), "--no-verify", "--T", "200000", "--hidden", "4", "--batch", "2",
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--T 200000" in err and "accepted: 1 to" in err, err
    assert not (tmp_path / "o").exists()


def test_files_follow_the_umask(tmp_path):
    """Outputs get the permissions the user's umask gives (mkstemp alone would make them 0600)."""
    from minidni.io import write_json

    umask = os.umask(0)
    os.umask(umask)
    path = write_json(tmp_path / "x.json", {"a": 1})
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_counts_of_the_table():
    """The table's size, printed for the closing note (tried / generated per command)."""
    per_command = {}
    for p in CASES:
        per_command[p.values[0]] = per_command.get(p.values[0], 0) + 1
    print(f"bad-input table: {len(CASES)} generated + {len(SEMANTIC)} semantic cases; per command: {per_command}")
    assert all(n > 0 for n in per_command.values())


def test_a_value_of_the_wrong_kind_says_which_kind():
    """An integer option given 2.5 says it wants an integer, not that 2.5 is no number."""
    with pytest.raises(argparse.ArgumentTypeError, match=r"^'2\.5' is not an integer \(accepted: an integer from 1"):
        positive_int("2.5")
    with pytest.raises(argparse.ArgumentTypeError, match=r"^'abc' is not a number \(accepted: a finite number > 0"):
        positive_float("abc")
