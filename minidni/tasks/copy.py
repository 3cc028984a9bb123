"""Copy and Repeat Copy (Graves et al. 2014) as endless streams for truncated BPTT.

Channels (time-major arrays, T steps, B batch rows):

    input  x      (T, B, 10): 0-7 the 8 bits, 8 the stop flag, 9 the repeat count R / max_repeats
    target        (T, B, 9):  0-7 the 8 bits, 8 the end marker
    mask          (T, B):     1.0 where the output is scored (the output phase), else 0.0
    episode_end   (T, B):     True at the last step of an episode (the end-marker step)
    level         (T, B):     the curriculum level of the episode each step belongs to
                              (a row's initial idle steps carry the level the stream started at)

One Copy episode with N vectors takes 2N+2 steps::

    step      0 .. N-1        N          N+1 .. 2N         2N+1
    input     vector_t        stop flag  0                 0
    target    0               0          vector_{t-N-1}    end marker
    mask      0               0          1                 1 (episode_end)

A Repeat Copy episode with N vectors and R repeats takes N(R+1)+3 steps: the N
vectors, the stop flag, one step with R / max_repeats on channel 9, then R*N output
steps (the N vectors R times) and the end-marker step. On scored steps all 9 output
channels are scored (the end-marker channel must stay 0 until the end).

Streaming: every batch row is its own endless stream of episodes, back to back, with
its own random generator (spawned from the ``rng`` given), so a row's content does
not depend on the window size: ``next_window(3)`` three times equals ``next_window(9)``
once. A row takes the curriculum's current level when it *starts* an episode, so a
level change reaches each row at its next episode. With ``stagger=True`` (default)
each row first idles for a random 0 .. num_steps-1 steps (zero input, nothing scored),
so the rows' episodes are out of phase and do not line up with the windows.

Scoring: :func:`sequence_bits` gives each step's error in bits; :class:`EpisodeScorer`
sums it per episode across windows and returns the completed episodes, which feed
:meth:`minidni.tasks.curriculum.Curriculum.update`. Typical loop::

    cur = Curriculum("repeat_copy")
    stream = CopyTaskStream(cur, batch_size=64, rng=np.random.default_rng(0))
    scorer = EpisodeScorer(64)
    while ...:
        w = stream.next_window(T)                  # host arrays
        logits = model(to_device(w.x), state)      # (T, B, 9); reset rows where w.episode_end
        bits = sequence_bits(logits, to_device(w.target), to_device(w.mask))    # (T, B)
        cur.update(scorer.update(bits, w.episode_end, w.level))
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from minidni.backend import get_xp, to_numpy
from minidni.tasks.curriculum import Curriculum

NUM_BITS = 8
IN_CHANNELS = 10
OUT_CHANNELS = 9
STOP_CHANNEL = 8      # input: stop flag
REPEAT_CHANNEL = 9    # input: normalised repeat count
END_CHANNEL = 8       # output: end marker


def _check_vectors(vectors: Any) -> np.ndarray:
    v = np.asarray(vectors)
    if v.ndim != 2 or v.shape[1] != NUM_BITS or v.shape[0] < 1:
        raise ValueError(f"vectors must have shape (N >= 1, {NUM_BITS}), got {v.shape}")
    if not np.isin(v, (0, 1)).all():
        raise ValueError("vectors must hold only 0 and 1")
    return v.astype(np.float32)


def copy_episode(vectors: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One Copy episode: ``vectors`` (N, 8) of 0/1 -> x (2N+2, 10), target (2N+2, 9), mask (2N+2,)."""
    v = _check_vectors(vectors)
    n = v.shape[0]
    x = np.zeros((2 * n + 2, IN_CHANNELS), np.float32)
    y = np.zeros((2 * n + 2, OUT_CHANNELS), np.float32)
    m = np.zeros(2 * n + 2, np.float32)
    x[:n, :NUM_BITS] = v
    x[n, STOP_CHANNEL] = 1.0
    y[n + 1:2 * n + 1, :NUM_BITS] = v
    y[2 * n + 1, END_CHANNEL] = 1.0
    m[n + 1:] = 1.0
    return x, y, m


def repeat_copy_episode(vectors: Any, repeats: int, max_repeats: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One Repeat Copy episode: ``vectors`` (N, 8), R = ``repeats`` in 1..max_repeats.

    Returns x (L, 10), target (L, 9), mask (L,) with L = N(R+1)+3; the repeat-count
    step carries ``repeats / max_repeats`` on channel 9.
    """
    v = _check_vectors(vectors)
    if not 1 <= repeats <= max_repeats:
        raise ValueError(f"repeats={repeats} is outside 1..max_repeats={max_repeats}")
    n = v.shape[0]
    length = n * (repeats + 1) + 3
    x = np.zeros((length, IN_CHANNELS), np.float32)
    y = np.zeros((length, OUT_CHANNELS), np.float32)
    m = np.zeros(length, np.float32)
    x[:n, :NUM_BITS] = v
    x[n, STOP_CHANNEL] = 1.0
    x[n + 1, REPEAT_CHANNEL] = repeats / max_repeats
    y[n + 2:length - 1, :NUM_BITS] = np.tile(v, (repeats, 1))
    y[length - 1, END_CHANNEL] = 1.0
    m[n + 2:] = 1.0
    return x, y, m


class CopyWindow(NamedTuple):
    """T consecutive steps of B streams (host NumPy arrays; shapes in the module docstring)."""
    x: np.ndarray            # (T, B, 10) float32
    target: np.ndarray       # (T, B, 9) float32
    mask: np.ndarray         # (T, B) float32
    episode_end: np.ndarray  # (T, B) bool
    level: np.ndarray        # (T, B) int64


class _Row:
    """One batch row's current segment: an episode, or the initial idle steps (stagger)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.vectors: list[list[int]] = []
        self.repeats = 1
        self.level = 0
        self.idle = 0          # > 0: the segment is `idle` blank steps, not an episode
        self.pos = 0
        self.arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def build(self, cur: Curriculum) -> None:
        if self.idle:
            self.arrays = (np.zeros((self.idle, IN_CHANNELS), np.float32),
                           np.zeros((self.idle, OUT_CHANNELS), np.float32),
                           np.zeros(self.idle, np.float32))
        elif cur.task == "copy":
            self.arrays = copy_episode(self.vectors)
        else:
            self.arrays = repeat_copy_episode(self.vectors, self.repeats, cur.max_repeats)

    def start_episode(self, cur: Curriculum) -> None:
        n, r = cur.lengths()
        self.level, self.repeats, self.idle, self.pos = cur.level, r, 0, 0
        self.vectors = self.rng.integers(0, 2, size=(n, NUM_BITS)).tolist()
        self.build(cur)

    @property
    def length(self) -> int:
        return len(self.arrays[2])

    def state(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "vectors": self.vectors, "repeats": self.repeats,
                "level": self.level, "idle": self.idle, "pos": self.pos}

    def load(self, state: dict[str, Any], cur: Curriculum) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.vectors, self.repeats = state["vectors"], state["repeats"]
        self.level, self.idle, self.pos = state["level"], state["idle"], state["pos"]
        self.build(cur)


class CopyTaskStream:
    """B endless Copy / Repeat Copy streams cut into consecutive windows of T steps.

    Args:
        curriculum: decides the task and each new episode's (N, R); shared with the
            training loop, which calls ``curriculum.update`` between windows.
        batch_size: B, the number of independent streams (rows).
        rng: seeds the rows: ``rng.spawn(batch_size)`` gives each row its own generator.
        stagger: start each row with 0 .. num_steps-1 idle steps (drawn from the row's
            generator) so that rows are out of phase; False starts every row at an episode.
    """

    def __init__(self, curriculum: Curriculum, batch_size: int, *, rng: np.random.Generator,
                 stagger: bool = True) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} is not a positive integer")
        self.curriculum = curriculum
        self.batch_size = batch_size
        self._rows = [_Row(g) for g in rng.spawn(batch_size)]
        for row in self._rows:
            row.level = curriculum.level
            row.idle = int(row.rng.integers(0, curriculum.num_steps())) if stagger else 0
            if row.idle:
                row.build(curriculum)
            else:
                row.start_episode(curriculum)

    def next_window(self, T: int) -> CopyWindow:
        """The next T steps of every row (continuing where the previous window stopped)."""
        if isinstance(T, bool) or not isinstance(T, int) or T < 1:
            raise ValueError(f"window length T={T!r} is not a positive integer")
        B = self.batch_size
        x = np.zeros((T, B, IN_CHANNELS), np.float32)
        y = np.zeros((T, B, OUT_CHANNELS), np.float32)
        m = np.zeros((T, B), np.float32)
        end = np.zeros((T, B), bool)
        level = np.zeros((T, B), np.int64)
        for b, row in enumerate(self._rows):
            t = 0
            while t < T:
                if row.pos == row.length:
                    row.start_episode(self.curriculum)
                k = min(T - t, row.length - row.pos)
                ex, ey, em = row.arrays
                x[t:t + k, b] = ex[row.pos:row.pos + k]
                y[t:t + k, b] = ey[row.pos:row.pos + k]
                m[t:t + k, b] = em[row.pos:row.pos + k]
                level[t:t + k, b] = row.level
                row.pos += k
                t += k
                if row.pos == row.length and not row.idle:
                    end[t - 1, b] = True
        return CopyWindow(x, y, m, end, level)

    def state_dict(self) -> dict[str, Any]:
        """Every row's generator state and position, as plain values (JSON-ready).

        The curriculum is checkpointed separately (``curriculum.state_dict()``).
        """
        return {"batch_size": self.batch_size, "task": self.curriculum.task,
                "rows": [row.state() for row in self._rows]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume exactly where :meth:`state_dict` was taken."""
        if state["batch_size"] != self.batch_size or state["task"] != self.curriculum.task:
            raise ValueError(f"stream state is for task {state['task']!r} with batch size "
                             f"{state['batch_size']}, this stream is {self.curriculum.task!r} "
                             f"with batch size {self.batch_size}")
        for row, row_state in zip(self._rows, state["rows"]):
            row.load(row_state, self.curriculum)


def sequence_bits(logits: Any, target: Any, mask: Any) -> Any:
    """Per-step error in bits: sigmoid cross-entropy summed over the output channels, masked.

    logits, target: (T, B, C); mask: (T, B). Returns (T, B) in the dtype of ``logits``,
    on the same backend (no host sync). Stable for any finite logits:
    ``softplus(z) - t*z = max(z, 0) - t*z + log1p(exp(-|z|))``, divided by ln 2.
    """
    xp = get_xp(logits, target, mask)
    if logits.shape != target.shape or logits.shape[:2] != mask.shape:
        raise ValueError(f"shapes disagree: logits {logits.shape}, target {target.shape}, mask {mask.shape}")
    nats = xp.maximum(logits, 0) - target * logits + xp.log1p(xp.exp(-xp.abs(logits)))
    return nats.sum(axis=2) * mask * (1.0 / math.log(2.0))


class CompletedEpisode(NamedTuple):
    """An episode that ended in a window: its total error in bits, its level and batch row."""
    bits: float
    level: int
    row: int


class EpisodeScorer:
    """Sums per-step bits into per-episode errors across windows.

    Args:
        batch_size: B; ``update`` takes (T, B) arrays.
    """

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self._partial = np.zeros(batch_size, np.float64)

    def update(self, step_bits: Any, episode_end: Any, level: Any) -> list[CompletedEpisode]:
        """Add one window; return the episodes that ended in it (by end step, then row).

        step_bits: (T, B) bits per step, already masked (e.g. :func:`sequence_bits`),
        NumPy or CuPy (copied to the host here). episode_end: (T, B) bool. level: (T, B) int.
        Bits of an episode that is still running are kept for the next window.
        """
        bits = np.asarray(to_numpy(step_bits), np.float64)
        end = np.asarray(to_numpy(episode_end), bool)
        level = np.asarray(to_numpy(level))
        if bits.shape != end.shape or bits.shape != level.shape or bits.shape[1:] != (self.batch_size,):
            raise ValueError(f"step_bits {bits.shape}, episode_end {end.shape} and level {level.shape} "
                             f"must all be (T, {self.batch_size})")
        done = []
        for b in range(self.batch_size):
            start = 0
            for t in np.flatnonzero(end[:, b]):
                total = self._partial[b] + bits[start:t + 1, b].sum()
                done.append((t, b, CompletedEpisode(float(total), int(level[t, b]), b)))
                self._partial[b] = 0.0
                start = t + 1
            self._partial[b] += bits[start:, b].sum()
        return [ep for _, _, ep in sorted(done, key=lambda item: item[:2])]

    def state_dict(self) -> dict[str, Any]:
        """The bits of the episodes still running, as plain values."""
        return {"partial": self._partial.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["partial"]) != self.batch_size:
            raise ValueError(f"scorer state has {len(state['partial'])} rows, expected {self.batch_size}")
        self._partial = np.asarray(state["partial"], np.float64)
