"""What every teaching notebook shares: the fast flag, where figures go, the data folders, exercise grading.

A notebook runs from any folder once the package is installed; nothing here looks
for a checkout. Environment variables:

``MINIDNI_FAST=1``
    small sizes and few steps, same code (what the test suite runs).
``MINIDNI_FIGURE_DIR=folder``
    also save every figure there as ``notebook_<NN>_<name>.png`` (without it
    figures are only displayed).
``MINIDNI_SOLUTIONS=1``
    an exercise left as a TODO stub is graded with the reference solution
    below instead, so the notebook runs end to end (CI sets it).
``MINIDNI_DATA``
    the data folder (:func:`minidni.data.resolve_data_dir`); without MNIST there the
    notebooks use :func:`minidni.data.mnist_or_standin`'s synthetic stand-in.

    >>> nb = Notebook("01")
    >>> nb.show(fig, "timeline")              # displays; saves when MINIDNI_FIGURE_DIR is set
    >>> nb.grade("tanh backward", tanh_backward, against=F.tanh_backward, cases=[(da, a)])
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from minidni import functional as F
from minidni.backend import backend_name, to_numpy
from minidni.data import resolve_data_dir
from minidni.dni.recurrent import copy_loss
from minidni.io import save_figure

__all__ = ["Notebook", "SOLUTIONS", "ExerciseError"]

FAST_VAR, FIGURE_VAR, SOLUTIONS_VAR = "MINIDNI_FAST", "MINIDNI_FIGURE_DIR", "MINIDNI_SOLUTIONS"


class ExerciseError(AssertionError):
    """An exercise's answer disagrees with the package (the message says by how much)."""


def _flag(name: str) -> bool:
    return os.environ.get(name, "") == "1"


def _max_gap(got, want) -> float:
    """Largest |got - want| over arrays or tuples of arrays (host floats); inf on a shape mismatch."""
    got = got if isinstance(got, (tuple, list)) else (got,)
    want = want if isinstance(want, (tuple, list)) else (want,)
    if len(got) != len(want):
        return float("inf")
    gaps = []
    for g, w in zip(got, want):
        g, w = np.asarray(to_numpy(g), np.float64), np.asarray(to_numpy(w), np.float64)
        if g.shape != w.shape:
            return float("inf")
        gaps.append(float(np.abs(g - w).max()) if g.size else 0.0)
    return max(gaps)


class Notebook:
    """The set-up of notebook ``number`` ("01", ...): flags read from the environment once."""

    def __init__(self, number: str):
        self.number = number
        self.fast = _flag(FAST_VAR)
        self.solutions = _flag(SOLUTIONS_VAR)
        folder = os.environ.get(FIGURE_VAR)
        self.figure_dir = Path(folder) if folder else None
        self.data_dir = resolve_data_dir()
        print(f"fast mode: {self.fast}; backend: {backend_name()}; data folder: {self.data_dir}; "
              f"figures saved to: {self.figure_dir or 'nowhere (set MINIDNI_FIGURE_DIR)'}; "
              f"reference solutions for unfinished exercises: {self.solutions}")

    @property
    def data_folders(self) -> tuple[Path]:
        """The folders :func:`minidni.data.mnist_or_standin` looks in (the package's own resolution)."""
        return (self.data_dir,)

    def show(self, fig, name: str) -> None:
        """Display ``fig``; save it as ``notebook_<NN>_<name>.png`` when MINIDNI_FIGURE_DIR is set."""
        import matplotlib.pyplot as plt  # noqa: PLC0415  (only notebooks draw)

        if self.figure_dir is not None:
            save_figure(fig, self.figure_dir / f"notebook_{self.number}_{name}.png")
        plt.show()
        plt.close(fig)

    def grade(self, name: str, answer: Callable, *, against: Callable, cases: Iterable[tuple],
              tol: float = 1e-8) -> bool:
        """Compare ``answer(*case)`` with ``against(*case)`` (the package) on every case; print a verdict.

        A stub that raises NotImplementedError is reported as not done (and, with
        MINIDNI_SOLUTIONS=1, replaced by ``SOLUTIONS[name]``, which is then graded
        the same way). A wrong answer raises :class:`ExerciseError`. Returns True
        when an answer was graded and agreed.
        """
        cases = list(cases)
        try:
            got = [answer(*case) for case in cases]
            who = "your answer"
        except NotImplementedError:
            if not self.solutions:
                print(f"[{name}] not done yet: fill in the TODO above, then run this cell again "
                      f"(or set {SOLUTIONS_VAR}=1 to see the reference solution graded)")
                return False
            got = [SOLUTIONS[name](*case) for case in cases]
            who = "the reference solution (MINIDNI_SOLUTIONS=1)"
        gap = max(_max_gap(g, against(*case)) for g, case in zip(got, cases))
        if not gap <= tol:
            raise ExerciseError(f"[{name}] {who} is WRONG: it differs from the package by up to {gap:.3g} "
                                f"(allowed {tol:g}) on {len(cases)} test case(s)")
        print(f"[{name}] CORRECT: {who} agrees with the package on {len(cases)} test case(s) "
              f"(largest difference {gap:.1e})")
        return True


# ---------------------------------------------------------------------- reference solutions
def _tanh_backward(da, a):
    """01: d tanh(z)/dz = 1 - tanh(z)^2, so z_bar = a_bar * (1 - a^2)."""
    return da * (1 - a * a)


def _linear_backward(dz, x, W):
    """01: z = x W + b -> (x_bar, W_bar, b_bar) = (z_bar W^T, x^T z_bar, sum_n z_bar_n)."""
    return dz @ W.T, x.T @ dz, dz.sum(axis=0)


def _bprop_calls_before_update(n):
    """01: n forwards, then (backward, update) for the n - 1 modules above, then module 1's backward."""
    return 3 * n - 1


def _linear_sg_grads(u, A, c, target):
    """02: l = |uA + c - t|^2 / (2N): (dl/dA, dl/dc) = (u^T E / N, sum_n E_n / N), E = uA + c - t."""
    E = u @ A + c - target
    return u.T @ E / u.shape[0], E.sum(axis=0) / u.shape[0]


def _update_probability(i, n, p, method):
    """02: module i (1 = bottom) of n updates with p^(n - i + 1) under bprop, with p under dni."""
    return p ** (n - i + 1) if method == "bprop" else p


def _aux_gradient(h1, A, a, p, lam):
    """03: L_aux = lam / (2B) |h1 A + a - p|^2 -> d L_aux / d h1 = lam / B (h1 A + a - p) A^T."""
    return lam / h1.shape[0] * (h1 @ A + a - p) @ A.T


def _bootstrapped_target(x1, y1, mask1, state, Wx, Wh, b, Wo, bo, M, m, sigma):
    """03: window 1 forward from s_T, sigma p / B injected at its end, backward; B [dh0; dc0]."""
    T, B, _ = x1.shape
    H = Wh.shape[0]
    hs, cT, cache = F.lstm_forward(x1, *state, Wx, Wh, b)
    logits, head_cache = F.linear_forward(hs.reshape(T * B, H), Wo, bo)
    _, dlogits, _ = copy_loss(logits.reshape(T, B, -1), y1, mask1)
    dhs = F.linear_backward(dlogits.reshape(T * B, -1), head_cache)[0].reshape(T, B, H)
    p = np.concatenate([hs[-1], cT], axis=1) @ M + m
    dhs[-1] += sigma * p[:, :H] / B
    _, dh0, dc0, *_ = F.lstm_backward(dhs, sigma * p[:, H:] / B, cache)
    return B * np.concatenate([dh0, dc0], axis=1)


def _surrogate_gradient(h, Y, A, B, C):
    """04: grad_h of (1/N) sum_n [h_n A h_n^T / 2 + (y_n B + C) h_n^T] = (h (A + A^T)/2 + Y B + C) / N."""
    return (h @ (A + A.T) / 2 + Y @ B + C) / h.shape[0]


def _surrogate_minimiser(A, B, C, y):
    """04: the per-example surrogate A h^2 / 2 + (B y + C) h (A > 0) is lowest at h* = -(B y + C) / A."""
    return -(B * y + C) / A


def _updates_and_memory(mode, T):
    """05: locked: A and B each step once per period, A keeps all T^2 steps; dni/none: A steps T times, keeps T."""
    return (1, 1, T * T) if mode == "locked" else (T, 1, T)


def _fd_message_gradient(tr, msgs, labels, k, eps):
    """05: (L_B(m + eps e) - L_B(m - eps e)) / (2 eps) for every entry e of message k, B's forward each time."""
    def loss(m):
        logits, _ = tr.slow_forward(m)
        return float(to_numpy(F.softmax_cross_entropy(logits, labels)[0]))

    grad = np.zeros(msgs.shape[1:])
    for row, j in np.ndindex(*grad.shape):
        up, down = msgs.copy(), msgs.copy()
        up[k, row, j] += eps
        down[k, row, j] -= eps
        grad[row, j] = (loss(up) - loss(down)) / (2 * eps)
    return grad


def _best_constant_accuracy(p, n):
    """05: the count over n steps is Binomial(n, p); the best constant answer is its mode: 100 max_k P(k)."""
    return 100 * max(math.comb(n, k) * p ** k * (1 - p) ** (n - k) for k in range(n + 1))


SOLUTIONS: dict[str, Callable] = {
    "01.tanh backward": _tanh_backward,
    "01.linear backward": _linear_backward,
    "01.backprop wait": _bprop_calls_before_update,
    "02.linear SG gradient": _linear_sg_grads,
    "02.update probability": _update_probability,
    "03.aux gradient": _aux_gradient,
    "03.bootstrapped target": _bootstrapped_target,
    "04.surrogate gradient": _surrogate_gradient,
    "04.surrogate minimiser": _surrogate_minimiser,
    "05.updates and memory": _updates_and_memory,
    "05.message gradient": _fd_message_gradient,
    "05.best constant guess": _best_constant_accuracy,
}
