"""Host synchronisations seen by the stand-in: what forced them and where.

On a GPU every ``float()``, ``int()``, ``bool()``, ``.item()``, ``.get()``,
``.tolist()``, ``repr()`` or pickling of a device array, ``cupy.asnumpy`` and every explicit
``synchronize`` waits until the queued kernels have run. The stand-in cannot
measure that wait, so it records each one with its call site instead.
"""

from __future__ import annotations

import contextlib
import sys
from collections import Counter
from pathlib import Path
from typing import NamedTuple

_HERE = str(Path(__file__).resolve().parent)
_ROOT = Path(__file__).resolve().parents[2]
_EDGE = str(_ROOT / "minidni" / "backend.py")  # to_numpy/synchronize: the caller is the site


class Sync(NamedTuple):
    """One host synchronisation: ``kind`` (e.g. ``".get()"``), ``site`` (``path:line in function``,
    the first frame outside the stand-in and minidni/backend.py), the innermost open ``region``
    and the recorder's ``step`` when it happened (set by a test, e.g. the windows trained so far)."""
    kind: str
    site: str
    region: str | None
    step: int | None = None


def _where(frame) -> str:
    path = Path(frame.f_code.co_filename)
    try:
        path = path.resolve().relative_to(_ROOT)
    except ValueError:
        pass
    return f"{path}:{frame.f_lineno} in {frame.f_code.co_name}"


def call_site() -> str:
    """The caller that forced the sync (frames of the stand-in and of minidni/backend.py skipped)."""
    frame = sys._getframe(1)
    while frame is not None and (frame.f_code.co_filename.startswith(_HERE) or frame.f_code.co_filename == _EDGE):
        frame = frame.f_back
    return _where(frame) if frame is not None else "?"


class SyncRecorder:
    """Collects :class:`Sync` events; ``region(name)`` marks where syncs are expected (log, eval, ...)."""

    def __init__(self) -> None:
        self.events: list[Sync] = []
        self._regions: list[str] = []
        self.step: int | None = None  # a test's clock: stamped on every Sync

    def record(self, kind: str) -> None:
        self.events.append(Sync(kind, call_site(), self._regions[-1] if self._regions else None, self.step))

    @contextlib.contextmanager
    def region(self, name: str):
        """Syncs inside the ``with`` block carry ``region=name``."""
        self._regions.append(name)
        try:
            yield
        finally:
            self._regions.pop()

    def clear(self) -> None:
        self.events.clear()
        self.step = None

    def outside_regions(self) -> list[Sync]:
        return [e for e in self.events if e.region is None]

    def by_site(self, events: list[Sync] | None = None) -> Counter:
        """``Counter`` of ``"kind at site"`` (readable in an assertion message)."""
        return Counter(f"{e.kind} at {e.site}" for e in (self.events if events is None else events))


SYNCS = SyncRecorder()
