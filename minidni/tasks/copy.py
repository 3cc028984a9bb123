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
sums it per episode across windows on the device (``add``, every window) and hands the
completed episodes to the host at log time (``collect``), which feed
:meth:`minidni.tasks.curriculum.Curriculum.update`. Typical loop::

    cur = Curriculum("repeat_copy")
    stream = CopyTaskStream(cur, batch_size=64, rng=np.random.default_rng(0))
    scorer = EpisodeScorer(64)
    while ...:
        w = stream.next_window(T)                  # host arrays
        logits = model(to_device(w.x), state)      # (T, B, 9); reset rows where w.episode_end
        bits = sequence_bits(logits, to_device(w.target), to_device(w.mask))    # (T, B)
        scorer.add(bits, w.episode_end, w.level)   # no host sync
        if step % log_every == 0:
            cur.update(scorer.collect())            # one host copy per log
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from minidni.backend import get_xp, to_device, to_numpy
from minidni.tasks.curriculum import Curriculum

NUM_BITS = 8
IN_CHANNELS = 10
OUT_CHANNELS = 9
STOP_CHANNEL = 8      # input: stop flag
REPEAT_CHANNEL = 9    # input: normalised repeat count
END_CHANNEL = 8       # output: end marker


_MASK_COL = IN_CHANNELS + OUT_CHANNELS   # columns of an episode table: x | target | mask | end | level
_END_COL = _MASK_COL + 1
_LEVEL_COL = _MASK_COL + 2
_WIDTH = _MASK_COL + 3


def _episode_table(v: np.ndarray, repeats: int | None, max_repeats: int) -> np.ndarray:
    """All channels of one episode as an (L, 22) float32 table (level column left 0).

    v: (N, 8) of 0/1; ``repeats=None`` is Copy (no repeat-count step, one output pass).
    """
    n = len(v)
    gap, r = (1, 1) if repeats is None else (2, repeats)    # stop flag (+ repeat-count step)
    length = n + gap + r * n + 1
    table = np.zeros((length, _WIDTH), np.float32)
    table[:n, :NUM_BITS] = v
    table[n, STOP_CHANNEL] = 1.0
    if repeats is not None:
        table[n + 1, REPEAT_CHANNEL] = repeats / max_repeats
    table[n + gap:length - 1, IN_CHANNELS:IN_CHANNELS + NUM_BITS] = np.tile(v, (r, 1))
    table[length - 1, IN_CHANNELS + END_CHANNEL] = 1.0
    table[n + gap:, _MASK_COL] = 1.0
    table[length - 1, _END_COL] = 1.0
    return table


def _check_vectors(vectors: Any) -> np.ndarray:
    v = np.asarray(vectors)
    if v.ndim != 2 or v.shape[1] != NUM_BITS or v.shape[0] < 1:
        raise ValueError(f"vectors must have shape (N >= 1, {NUM_BITS}), got {v.shape}")
    if not np.isin(v, (0, 1)).all():
        raise ValueError("vectors must hold only 0 and 1")
    return v


def _split(table: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (table[:, :IN_CHANNELS].copy(), table[:, IN_CHANNELS:_MASK_COL].copy(),
            table[:, _MASK_COL].copy())


def copy_episode(vectors: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One Copy episode: ``vectors`` (N, 8) of 0/1 -> x (2N+2, 10), target (2N+2, 9), mask (2N+2,)."""
    return _split(_episode_table(_check_vectors(vectors), None, 1))


def repeat_copy_episode(vectors: Any, repeats: int, max_repeats: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One Repeat Copy episode: ``vectors`` (N, 8), R = ``repeats`` in 1..max_repeats.

    Returns x (L, 10), target (L, 9), mask (L,) with L = N(R+1)+3; the repeat-count
    step carries ``repeats / max_repeats`` on channel 9.
    """
    v = _check_vectors(vectors)
    if not 1 <= repeats <= max_repeats:
        raise ValueError(f"repeats={repeats} is outside 1..max_repeats={max_repeats}")
    return _split(_episode_table(v, repeats, max_repeats))


class CopyWindow(NamedTuple):
    """T consecutive steps of B streams (host NumPy arrays; shapes in the module docstring)."""
    x: np.ndarray            # (T, B, 10) float32
    target: np.ndarray       # (T, B, 9) float32
    mask: np.ndarray         # (T, B) float32
    episode_end: np.ndarray  # (T, B) bool
    level: np.ndarray        # (T, B) int64


class _Row:
    """One batch row's current segment: an episode, or the initial idle steps (stagger).

    ``table`` (L, 22) float32 holds the segment's steps as x (10) | target (9) | mask |
    episode_end | level, so filling a window costs one slice copy per segment.
    ``vectors`` (N, 8) uint8 are the current episode's inputs.
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.vectors = np.zeros((0, NUM_BITS), np.uint8)
        self.repeats = 1
        self.level = 0
        self.idle = 0          # > 0: the segment is `idle` blank steps, not an episode
        self.pos = 0
        self.table = np.zeros((0, _WIDTH), np.float32)

    def build(self, cur: Curriculum) -> None:
        if self.idle:
            self.table = np.zeros((self.idle, _WIDTH), np.float32)
        else:
            repeats = None if cur.task == "copy" else self.repeats
            self.table = _episode_table(self.vectors, repeats, cur.max_repeats)
        self.table[:, _LEVEL_COL] = self.level

    def start_episode(self, cur: Curriculum) -> None:
        n, r = cur.lengths()
        self.level, self.repeats, self.idle, self.pos = cur.level, r, 0, 0
        self.vectors = self.rng.integers(0, 2, size=(n, NUM_BITS), dtype=np.uint8)
        self.build(cur)

    def state(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "vectors": self.vectors.tolist(), "repeats": self.repeats,
                "level": self.level, "idle": self.idle, "pos": self.pos}

    def load(self, state: dict[str, Any], cur: Curriculum) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.vectors = np.asarray(state["vectors"], np.uint8).reshape(-1, NUM_BITS)
        self.repeats = state["repeats"]
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
        buf = np.empty((T, self.batch_size, _WIDTH), np.float32)
        for b, row in enumerate(self._rows):
            t = 0
            while t < T:
                if row.pos == len(row.table):
                    row.start_episode(self.curriculum)
                k = min(T - t, len(row.table) - row.pos)
                buf[t:t + k, b] = row.table[row.pos:row.pos + k]
                row.pos += k
                t += k
        return CopyWindow(np.ascontiguousarray(buf[..., :IN_CHANNELS]),
                          np.ascontiguousarray(buf[..., IN_CHANNELS:_MASK_COL]),
                          np.ascontiguousarray(buf[..., _MASK_COL]), buf[..., _END_COL] == 1.0,
                          buf[..., _LEVEL_COL].astype(np.int64))

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
    """Sums per-step bits into per-episode errors across windows, on the bits' backend.

    Every window: :meth:`add` (no host sync: the sums stay on the device). At log time:
    :meth:`collect` copies the episodes completed since the last collect to the host in
    one transfer. :meth:`update` is ``add`` then ``collect`` (a host sync per window).

    Args:
        batch_size: B; ``add`` takes (T, B) arrays.
    """

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self._partial: Any = np.zeros(batch_size, np.float64)  # (B,) bits of the running episodes
        self._totals: list = []     # per window with ends: (k,) float64 totals on the bits' backend
        self._where: list = []      # per window with ends: host (level (k,), row (k,)) of those totals
        self._loaded: list[CompletedEpisode] = []  # uncollected episodes restored from a checkpoint

    def add(self, step_bits: Any, episode_end: Any, level: Any) -> None:
        """Add one window, without a host sync.

        step_bits: (T, B) bits per step, already masked (e.g. :func:`sequence_bits`), NumPy or
        CuPy. episode_end: (T, B) bool and level: (T, B) int, host arrays (the stream's).
        Bits of an episode that is still running are kept for the next window.
        """
        xp = get_xp(step_bits)
        end, level = np.asarray(episode_end, bool), np.asarray(level)
        if step_bits.shape != end.shape or end.shape != level.shape or end.shape[1:] != (self.batch_size,):
            raise ValueError(f"step_bits {step_bits.shape}, episode_end {end.shape} and level {level.shape} "
                             f"must all be (T, {self.batch_size})")
        partial = self._partial if get_xp(self._partial) is xp else to_device(self._partial, xp)
        cum = xp.cumsum(step_bits.astype(xp.float64), axis=0)  # (T, B) running sums within the window
        rows, steps = np.nonzero(end.T)                # ends ordered by row, then step (host: the stream's)
        if len(rows):
            same_row = np.zeros(len(rows), bool)
            same_row[1:] = rows[1:] == rows[:-1]
            is_last = np.ones(len(rows), bool)
            is_last[:-1] = ~same_row[1:]
            last = rows[is_last]                       # each row with an end, once
            order = np.lexsort((rows, steps))          # report by end step, then row
            rows_d, steps_d, prev_d, same_d, last_d, last_steps_d, order_d = (
                to_device(a, xp) for a in (rows, steps, np.roll(steps, 1), same_row, last, steps[is_last], order))
            # an episode's total: running sum at its end minus the running sum at the previous end
            # of the same row, or plus the bits carried from earlier windows for the row's first end
            before = xp.where(same_d, cum[prev_d, rows_d], -partial[rows_d])
            self._totals.append((cum[steps_d, rows_d] - before)[order_d])
            self._where.append((level[steps, rows][order], rows[order]))
            carry = partial + cum[-1]
            carry[last_d] = cum[-1, last_d] - cum[last_steps_d, last_d]  # what follows each row's last end
            self._partial = carry
        else:
            self._partial = partial + cum[-1]

    def collect(self) -> list[CompletedEpisode]:
        """The episodes completed since the last collect (by window, end step, then row): one host copy."""
        done, self._loaded = self._loaded, []
        if self._totals:
            totals = to_numpy(get_xp(self._totals[0]).concatenate(self._totals))
            levels = np.concatenate([lv for lv, _ in self._where])
            rows = np.concatenate([r for _, r in self._where])
            done += [CompletedEpisode(float(t), int(lv), int(r)) for t, lv, r in zip(totals, levels, rows)]
            self._totals, self._where = [], []
        return done

    def update(self, step_bits: Any, episode_end: Any, level: Any) -> list[CompletedEpisode]:
        """:meth:`add` one window, then :meth:`collect` (a host sync: on a GPU, collect at log time)."""
        self.add(step_bits, episode_end, level)
        return self.collect()

    def state_dict(self) -> dict[str, Any]:
        """The bits of the episodes still running (and uncollected episodes, if any), as plain values."""
        state: dict[str, Any] = {"partial": np.asarray(to_numpy(self._partial), np.float64).tolist()}
        pending = self.collect()
        if pending:
            state["pending"] = [list(e) for e in pending]
            self._loaded = pending  # still to be collected
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["partial"]) != self.batch_size:
            raise ValueError(f"scorer state has {len(state['partial'])} rows, expected {self.batch_size}")
        self._partial = np.asarray(state["partial"], np.float64)
        self._totals, self._where = [], []
        self._loaded = [CompletedEpisode(float(b), int(lv), int(r)) for b, lv, r in state.get("pending", [])]
