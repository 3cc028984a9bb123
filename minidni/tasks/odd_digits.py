"""The odd-digit stream of the multi-network experiment (PAPER.md §1, the two-clock system).

B independent rows, each a stream of digit images, one image per step. Time is cut
into **periods** of T² steps, each made of T **windows** of T steps:

    step          0 .. T-1 | T .. 2T-1 | ... | T²-T .. T²-1
    window        0        | 1         | ... | T-1
    fast label    odd digits in window k (0..T), due at the window's last step (network A)
    slow label    odd digits in the whole period (0..T²), due at its last step (network B)

So A's label comes every T steps and counts the last T steps; B's comes every T²
steps and counts the last T² steps (the period's windows are aligned for every row,
as both networks tick in step). Each step of each row draws an image uniformly from
the split with the stream's generator, so rows are independent; a held-out stream
reads the test split with its own seed.

    >>> stream = OddDigitStream(x_train, y_train, batch_size=32, T=4, rng=np.random.default_rng(0))
    >>> p = stream.next_period()     # p.x (16, 32, 784); p.fast_y (4, 32) in 0..4; p.slow_y (32,) in 0..16

``state_dict()`` / ``load_state_dict()`` hold the generator's state and the period
count (plain values, JSON-ready), so a resumed stream continues exactly.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

__all__ = ["OddDigitPeriod", "OddDigitStream", "odd_counts"]


def odd_counts(digits: np.ndarray, T: int) -> np.ndarray:
    """Odd digits per block of T consecutive steps: digits (L, B) int, L a multiple of T -> (L // T, B) int64."""
    digits = np.asarray(digits)
    if digits.ndim != 2 or digits.shape[0] % T:
        raise ValueError(f"digits must be (L, B) with L a multiple of T={T}, got shape {digits.shape}")
    odd = (digits % 2 == 1).astype(np.int64)
    return odd.reshape(digits.shape[0] // T, T, digits.shape[1]).sum(axis=1)


class OddDigitPeriod(NamedTuple):
    """One period of T² steps for B rows (host arrays)."""
    x: np.ndarray       # (T*T, B, D) float32 images, time-major
    digits: np.ndarray  # (T*T, B) int64 the digit shown at each step
    fast_y: np.ndarray  # (T, B) int64 odd digits in window k: A's label at step k*T + T-1
    slow_y: np.ndarray  # (B,) int64 odd digits in the period: B's label at its last tick


class OddDigitStream:
    """B endless streams of digit images cut into periods of T² steps.

    Args:
        images: (N, D) float32 pool (e.g. MNIST's flattened training images).
        labels: (N,) int digits 0..9 of the images.
        batch_size: B, independent rows.
        T: window length (A's clock period); a period is T windows.
        rng: draws the image of every step of every row.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, T: int, *,
                 rng: np.random.Generator) -> None:
        for name, value in (("batch_size", batch_size), ("T", T)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name}={value!r} is not a positive integer")
        if images.ndim != 2 or labels.shape != images.shape[:1] or len(labels) == 0:
            raise ValueError(f"images must be (N, D) and labels (N,) with N >= 1, got {images.shape} and {labels.shape}")
        self.images, self.labels = images, np.asarray(labels, np.int64)
        self.batch_size, self.T = int(batch_size), int(T)
        self.rng = rng
        self.periods = 0  # periods delivered so far

    def next_period(self) -> OddDigitPeriod:
        """The next T² steps of every row."""
        T = self.T
        index = self.rng.integers(0, len(self.labels), size=(T * T, self.batch_size))
        digits = self.labels[index]
        self.periods += 1
        return OddDigitPeriod(self.images[index], digits, odd_counts(digits, T), odd_counts(digits, T * T)[0])

    def state_dict(self) -> dict[str, Any]:
        """The generator's state, the period count and the shape of the stream, as plain values."""
        return {"rng": self.rng.bit_generator.state, "periods": self.periods, "batch_size": self.batch_size,
                "T": self.T, "pool": len(self.labels)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue exactly where :meth:`state_dict` was taken."""
        mine = (self.batch_size, self.T, len(self.labels))
        theirs = (state["batch_size"], state["T"], state["pool"])
        if mine != theirs:
            raise ValueError(f"stream state is for (batch_size, T, pool size) = {theirs}, this stream is {mine}")
        self.rng.bit_generator.state = state["rng"]
        self.periods = state["periods"]
