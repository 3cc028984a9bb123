"""Curriculum for Copy and Repeat Copy: the episodes grow once the model solves them.

Rule (PAPER.md §3): each completed episode is scored by its error in bits (per-bit
sigmoid cross-entropy, base 2, summed over the 9 output channels and over the
episode's scored steps). The curriculum keeps the errors of the last ``window``
completed episodes *of the current level*; once that window is full and its mean
is below ``threshold`` (0.15 bits per episode), the level counts as **solved**,
the next level starts, and the window is emptied.

Only episodes generated at the current level count. The batch rows of a stream
are out of phase, so after a level change the rows finish the episodes they had
begun at the old level; those are ignored (each row switches at its next episode).

Levels (level 0 is ``(start_length, start_repeats)``):

- ``copy``: N = start_length + level (R is 1 and unused).
- ``repeat_copy``: N and R grow in turn, N first: (1,1), (2,1), (2,2), (3,2), (3,3), ...
  Every Repeat Copy entry of the paper's Table 2 (5, 7, 19, 23, 33, 39, 59, 67) is
  N·R+3 of a level on this path ((2,1), (2,2), (4,4), (5,4), (6,5), (6,6), (8,7),
  (8,8)); growing both at once would give only squares. When one of N, R reaches its
  cap (``max_length``, ``max_repeats``) the other keeps growing; when both are capped
  the level stays and ``exhausted`` is True.

Reported length (Table 2): ``N + 3`` for Copy and ``N*R + 3`` for Repeat Copy of the
largest *solved* level (``max_episode_length``, 0 while nothing is solved). The
number of time steps an episode actually takes is :meth:`Curriculum.num_steps`:
``2N + 2`` for Copy (N inputs, stop flag, N outputs, end marker) and
``N(R+1) + 3`` for Repeat Copy (N inputs, stop flag, repeat count, R·N outputs,
end marker).

What the 0.15 bits are measured per (``unit``; the paper says only "0.15 bits"):
``episode`` (default) the episode's total, the strictest reading; ``step`` the total
divided by the episode's scored steps (:meth:`Curriculum.scored_steps`: N+1 for Copy,
N·R+1 for Repeat Copy); ``bit`` divided further by the 9 scored output channels. The
window holds these per-unit errors, and ``recent_mean`` is in the same unit.

The whole state is plain Python values (:meth:`Curriculum.state_dict`), so a
training checkpoint can store it as JSON and resume it exactly.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Iterable

TASKS = ("copy", "repeat_copy")
UNITS = ("episode", "step", "bit")
OUTPUT_CHANNELS = 9  # scored channels of every output step: the 8 bits and the end marker
DEFAULT_THRESHOLD = 0.15
DEFAULT_WINDOW = 100
DEFAULT_MAX_REPEATS = 10


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}={value!r} is not an integer >= {low}")
    return value


class Curriculum:
    """Level bookkeeping for Copy / Repeat Copy (see the module docstring for the rule).

    Args:
        task: ``"copy"`` or ``"repeat_copy"``.
        start_length: N at level 0 (>= 1).
        start_repeats: R at level 0 (>= 1; Repeat Copy only).
        max_length: cap on N (None: no cap). ``start_length == max_length`` fixes N.
        max_repeats: cap on R and the normaliser of the repeat-count input
            (the input is ``R / max_repeats``); default 10.
        threshold: the mean error (bits per episode) below which a level is solved.
        window: how many completed episodes of the current level the mean is taken over;
            the level can only be solved once the window is full.
        unit: what ``threshold`` is measured per: ``episode``, ``step`` or ``bit`` (module docstring).
    """

    def __init__(self, task: str = "copy", *, start_length: int = 1, start_repeats: int = 1,
                 max_length: int | None = None, max_repeats: int = DEFAULT_MAX_REPEATS,
                 threshold: float = DEFAULT_THRESHOLD, window: int = DEFAULT_WINDOW, unit: str = "episode") -> None:
        if task not in TASKS:
            raise ValueError(f"task={task!r} is not one of {TASKS}")
        self.task = task
        self.start_length = _check_int("start_length", start_length, 1)
        self.max_repeats = _check_int("max_repeats", max_repeats, 1)
        self.start_repeats = _check_int("start_repeats", start_repeats, 1)
        if self.start_repeats > self.max_repeats:
            raise ValueError(f"start_repeats={start_repeats} exceeds max_repeats={max_repeats}")
        if max_length is not None:
            _check_int("max_length", max_length, start_length)
        self.max_length = max_length
        if not (isinstance(threshold, (int, float)) and threshold > 0 and math.isfinite(threshold)):
            raise ValueError(f"threshold={threshold!r} is not a positive finite number of bits")
        self.threshold = float(threshold)
        self.window = _check_int("window", window, 1)
        if unit not in UNITS:
            raise ValueError(f"unit={unit!r} is not one of {UNITS}")
        self.unit = unit
        self.level = 0
        self.solved_level: int | None = None
        self._recent: deque[float] = deque(maxlen=self.window)
        self._path: list[tuple[int, int]] = [(self.start_length, self.start_repeats)]

    # -- levels ---------------------------------------------------------------------------
    def _grow(self, n: int, r: int, step: int) -> tuple[int, int] | None:
        """(N, R) of the level after ``step`` growths from (n, r), or None when capped."""
        n_ok = self.max_length is None or n < self.max_length
        if self.task == "copy":
            return (n + 1, r) if n_ok else None
        r_ok = r < self.max_repeats
        prefer_n = step % 2 == 0
        if n_ok and (prefer_n or not r_ok):
            return n + 1, r
        if r_ok:
            return n, r + 1
        return None

    def lengths(self, level: int | None = None) -> tuple[int, int]:
        """(N, R) of ``level`` (default: the current one). R is 1 for Copy."""
        level = self.level if level is None else _check_int("level", level, 0)
        while len(self._path) <= level:
            nxt = self._grow(*self._path[-1], step=len(self._path) - 1)
            if nxt is None:
                raise ValueError(f"level {level} does not exist: the caps stop at level {len(self._path) - 1}")
            self._path.append(nxt)
        return self._path[level]

    def num_steps(self, level: int | None = None) -> int:
        """Time steps of one episode at ``level``: 2N+2 (Copy) or N(R+1)+3 (Repeat Copy)."""
        n, r = self.lengths(level)
        return 2 * n + 2 if self.task == "copy" else n * (r + 1) + 3

    def scored_steps(self, level: int | None = None) -> int:
        """Scored (output) steps of one episode at ``level``: N+1 (Copy) or N*R+1 (Repeat Copy), end marker included."""
        n, r = self.lengths(level)
        return n + 1 if self.task == "copy" else n * r + 1

    def per_unit(self, bits: float, level: int | None = None) -> float:
        """An episode's total error ``bits`` in the curriculum's ``unit``."""
        if self.unit == "episode":
            return bits
        steps = self.scored_steps(level)
        return bits / steps if self.unit == "step" else bits / (steps * OUTPUT_CHANNELS)

    def episode_length(self, level: int | None = None) -> int:
        """The length Table 2 reports for ``level``: N+3 (Copy) or N*R+3 (Repeat Copy)."""
        n, r = self.lengths(level)
        return n + 3 if self.task == "copy" else n * r + 3

    @property
    def max_episode_length(self) -> int:
        """``episode_length`` of the largest solved level; 0 while no level is solved."""
        return 0 if self.solved_level is None else self.episode_length(self.solved_level)

    @property
    def exhausted(self) -> bool:
        """True when the caps leave no level after the current one."""
        return self._grow(*self.lengths(), step=self.level) is None

    @property
    def recent_mean(self) -> float:
        """Mean error over the current window, in bits per ``unit``; NaN when it is empty."""
        return sum(self._recent) / len(self._recent) if self._recent else math.nan

    @property
    def recent_count(self) -> int:
        """How many current-level episodes the window holds (at most ``window``)."""
        return len(self._recent)

    # -- the rule -------------------------------------------------------------------------
    def update(self, episodes: Iterable[Any]) -> bool:
        """Feed completed episodes; return True when the level grew.

        ``episodes``: items with ``.bits`` and ``.level`` (e.g. ``CompletedEpisode``
        from :class:`minidni.tasks.copy.EpisodeScorer`) or ``(bits, level)`` pairs,
        in completion order. Episodes whose level is not the current one are skipped.
        """
        grew = False
        for ep in episodes:
            bits, level = (ep.bits, ep.level) if hasattr(ep, "bits") else ep
            if level != self.level:
                continue
            if not math.isfinite(bits):
                raise ValueError(f"episode error {bits!r} bits is not finite")
            self._recent.append(float(self.per_unit(bits, level)))
            if len(self._recent) == self.window and self.recent_mean < self.threshold:
                self.solved_level = self.level
                self._recent.clear()
                if not self.exhausted:
                    self.level += 1
                    self.lengths()
                    grew = True
        return grew

    # -- checkpointing --------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The constructor arguments, as plain values."""
        return {"task": self.task, "start_length": self.start_length,
                "start_repeats": self.start_repeats, "max_length": self.max_length,
                "max_repeats": self.max_repeats, "threshold": self.threshold, "window": self.window,
                "unit": self.unit}

    def state_dict(self) -> dict[str, Any]:
        """Configuration and progress as plain values (JSON-ready)."""
        return {"config": self.config(), "level": self.level,
                "solved_level": self.solved_level, "recent": list(self._recent)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`; the configuration must match this object's."""
        if {"unit": "episode", **state["config"]} != self.config():  # (checkpoints from before `unit` existed)
            raise ValueError(f"curriculum state was saved with {state['config']}, "
                             f"this curriculum has {self.config()}")
        self.lengths(_check_int("level", state["level"], 0))
        self.level = state["level"]
        self.solved_level = state["solved_level"]
        self._recent = deque((float(b) for b in state["recent"]), maxlen=self.window)

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "Curriculum":
        """A new curriculum built and resumed from :meth:`state_dict`."""
        cur = cls(**state["config"])
        cur.load_state_dict(state)
        return cur

    def __repr__(self) -> str:
        n, r = self.lengths()
        what = f"N={n}" if self.task == "copy" else f"N={n}, R={r}"
        return (f"Curriculum({self.task}, level {self.level}: {what}, "
                f"solved length {self.max_episode_length}, recent mean {self.recent_mean:.3g} bits "
                f"over {self.recent_count}/{self.window})")
