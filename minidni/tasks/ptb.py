"""Character-level language modelling helpers: batched streams for truncated BPTT, BPC.

:class:`CharStream` cuts a 1-D array of symbol ids (e.g. ``load_ptb_chars().train``)
into B contiguous streams, row b holding ids ``[b*m, (b+1)*m]`` with
``m = (len(ids) - 1) // B`` (the last few ids are dropped), and hands out windows
in order::

    x_ids (T, B): ids[b*m + p + t]        y_ids (T, B): ids[b*m + p + t + 1]   (next symbol)

for t < T at the stream position p. The last window of a pass may be shorter than
T, so every one of the ``B*m`` targets is scored exactly once per pass (what an
evaluation needs). After the last window the next call starts a new pass at p = 0
and flags it (``CharWindow.first``), which is where a trainer resets its state.

Bits per character: the losses from :func:`minidni.functional.softmax_cross_entropy`
are natural-log means; :class:`BPCMeter` weights each window's mean by its number of
characters and reports ``total_nats / n_chars / ln 2``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from minidni.backend import get_backend, to_device, to_numpy


class CharWindow(NamedTuple):
    """One window of a :class:`CharStream` (host int64 arrays)."""
    x: np.ndarray   # (T', B) input ids, T' <= T
    y: np.ndarray   # (T', B) target ids (the next symbol of each input)
    first: bool     # True when this window starts a pass (position 0): reset the state


class CharStream:
    """B contiguous streams over ``ids`` for truncated BPTT (layout in the module docstring).

    Args:
        ids: 1-D integer array of symbol ids (host).
        batch_size: B, the number of parallel streams; needs ``len(ids) >= B + 1``.
    """

    def __init__(self, ids: Any, batch_size: int) -> None:
        ids = np.asarray(ids)
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"ids must be a 1-D integer array, got shape {ids.shape} dtype {ids.dtype}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} is not a positive integer")
        m = (len(ids) - 1) // batch_size
        if m < 1:
            raise ValueError(f"{len(ids)} ids are too few for batch_size={batch_size} (need at least {batch_size + 1})")
        self.batch_size = batch_size
        self.steps_per_pass = m
        ids = ids.astype(np.int64, copy=False)
        self._x = ids[:batch_size * m].reshape(batch_size, m)
        self._y = ids[1:batch_size * m + 1].reshape(batch_size, m)
        self.pos = 0
        self.passes = 0

    @property
    def n_chars(self) -> int:
        """Targets scored per pass: B * steps_per_pass."""
        return self.batch_size * self.steps_per_pass

    def windows_per_pass(self, T: int) -> int:
        """How many windows of (at most) T steps one pass takes."""
        return -(-self.steps_per_pass // T)

    def next_window(self, T: int) -> CharWindow:
        """The next window of at most T steps; wraps to a new pass after the last one."""
        if isinstance(T, bool) or not isinstance(T, int) or T < 1:
            raise ValueError(f"window length T={T!r} is not a positive integer")
        if self.pos == self.steps_per_pass:
            self.pos = 0
            self.passes += 1
        p, q = self.pos, min(self.pos + T, self.steps_per_pass)
        self.pos = q
        return CharWindow(np.ascontiguousarray(self._x[:, p:q].T), np.ascontiguousarray(self._y[:, p:q].T), p == 0)

    def iter_pass(self, T: int):
        """Yield the windows from the current position to the end of the pass (evaluation)."""
        if self.pos == self.steps_per_pass:
            self.pos = 0
            self.passes += 1
        while self.pos < self.steps_per_pass:
            yield self.next_window(T)

    def state_dict(self) -> dict[str, int]:
        """Position as plain values (the ids themselves are reloaded from the data)."""
        return {"batch_size": self.batch_size, "steps_per_pass": self.steps_per_pass,
                "pos": self.pos, "passes": self.passes}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if (state["batch_size"], state["steps_per_pass"]) != (self.batch_size, self.steps_per_pass):
            raise ValueError(f"stream state is for batch {state['batch_size']} x {state['steps_per_pass']} steps, "
                             f"this stream is {self.batch_size} x {self.steps_per_pass}")
        if not 0 <= state["pos"] <= self.steps_per_pass:
            raise ValueError(f"stream position {state['pos']} is outside 0..{self.steps_per_pass}")
        self.pos, self.passes = state["pos"], state["passes"]


def one_hot(ids: Any, vocab_size: int, *, xp: Any = None, dtype: Any = np.float32) -> Any:
    """ids (...) int -> (..., vocab_size) one-hot of ``dtype`` on backend ``xp`` (default: current).

    Host ids are range-checked (ValueError naming the bad id); device ids are not (no sync).
    """
    xp = get_backend() if xp is None else xp
    if isinstance(ids, np.ndarray):
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"ids must be integers, got dtype {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
            bad = ids.min() if ids.min() < 0 else ids.max()
            raise ValueError(f"id {bad} is outside the vocabulary 0..{vocab_size - 1}")
    return xp.eye(vocab_size, dtype=dtype)[to_device(ids, xp)]


def nats_to_bits(nats: float) -> float:
    """Convert a natural-log loss to bits (divide by ln 2)."""
    return nats / math.log(2.0)


class BPCMeter:
    """Accumulates character losses and reports bits per character."""

    def __init__(self) -> None:
        self.total_nats = 0.0
        self.n_chars = 0

    def add(self, mean_nats: Any, n_chars: int) -> None:
        """Add a window whose mean loss over ``n_chars`` characters is ``mean_nats`` (natural log).

        ``mean_nats`` may be a 0-d device array; it is copied to the host here.
        """
        self.total_nats += float(to_numpy(mean_nats)) * n_chars
        self.n_chars += n_chars

    @property
    def bpc(self) -> float:
        """Bits per character so far; NaN before anything was added."""
        return nats_to_bits(self.total_nats / self.n_chars) if self.n_chars else math.nan
