"""Named scratch arrays reused from call to call, so a training loop stops allocating.

A training window allocates the same arrays every time (the LSTM's (T, B, 4H)
gates and their gradients, the synthetic gradient's input and output, ...). A
:class:`Workspace` hands out the same array for the same name as long as the
shape and dtype match, so after the first window nothing is allocated (and, on
the CPU, no fresh pages are faulted in):

    >>> ws = Workspace()
    >>> a = ws.array(xp, "ifgo", (T, N, 4 * H), xp.float32)   # allocated once
    >>> ws.array(xp, "ifgo", (T, N, 4 * H), xp.float32) is a  # True: the same memory next time

Whatever lives in a workspace is overwritten by the next call that uses it:
results that must outlive the call are copied out, or come from a second
workspace used on alternate calls (as :class:`minidni.dni.recurrent.RecurrentTrainer` does).
Functions that take ``workspace=None`` make a fresh :class:`Workspace` per call,
which allocates every array anew: the same code path, with plain arrays.
"""

from __future__ import annotations

__all__ = ["Workspace"]


class Workspace:
    """A dict of named arrays; :meth:`array` returns the stored one when its shape, dtype and backend match."""

    def __init__(self) -> None:
        self._arrays: dict = {}

    def array(self, xp, name: str, shape: tuple, dtype):
        """An uninitialised array ``name`` of ``shape`` and ``dtype`` on ``xp`` (reused when it matches)."""
        a = self._arrays.get(name)
        if a is None or a.shape != tuple(shape) or a.dtype != dtype or not isinstance(a, xp.ndarray):
            a = self._arrays[name] = xp.empty(shape, dtype=dtype)
        return a

    def __len__(self) -> int:
        return len(self._arrays)
