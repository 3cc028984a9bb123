"""``cupy.cuda`` of the stand-in: a faked device, streams and events; synchronising is a recorded host sync."""

from __future__ import annotations

import time
import types

from ._syncs import SYNCS

DEVICE_COUNT = [1]  # the faked visible devices (a test sets 0 to see the "no GPU" path)


class CUDARuntimeError(RuntimeError):
    """As ``cupy_backends.cuda.api.runtime.CUDARuntimeError``."""


def getDeviceCount() -> int:  # noqa: N802  (CUDA's name)
    return DEVICE_COUNT[0]


def getDeviceProperties(device: int) -> dict:  # noqa: N802
    if not 0 <= device < DEVICE_COUNT[0]:
        raise CUDARuntimeError("cudaErrorInvalidDevice: invalid device ordinal")
    return {"name": b"strict CuPy stand-in (NumPy on the host)", "totalGlobalMem": 16 * 2**30, "major": 9,
            "minor": 0, "multiProcessorCount": 1}


def deviceSynchronize() -> None:  # noqa: N802
    SYNCS.record("cuda.runtime.deviceSynchronize")


def runtimeGetVersion() -> int:  # noqa: N802
    return 12080


def driverGetVersion() -> int:  # noqa: N802
    return 12080


class Event:
    """Records a host clock; ``get_elapsed_time`` needs the end event synchronised, as CUDA does."""

    __module__ = "cupy.cuda"

    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self._time = None
        self._synchronized = False
        self.disable_timing = disable_timing

    def record(self, stream=None):
        self._time, self._synchronized = time.perf_counter(), False

    def synchronize(self):
        SYNCS.record("Event.synchronize")
        self._synchronized = True

    @property
    def done(self) -> bool:
        return True


def get_elapsed_time(start_event: Event, end_event: Event) -> float:
    """Milliseconds between two recorded events (CUDA: cudaErrorNotReady unless the end has completed)."""
    if start_event._time is None or end_event._time is None:
        raise CUDARuntimeError("cudaErrorInvalidResourceHandle: an event was never recorded")
    if not end_event._synchronized:
        raise CUDARuntimeError("cudaErrorNotReady: synchronise the end event before reading the time")
    return (end_event._time - start_event._time) * 1000.0


class Stream:
    __module__ = "cupy.cuda"
    null: "Stream"

    def __init__(self, null=False, non_blocking=False, ptds=False, priority=None):
        self.is_non_blocking = non_blocking

    def synchronize(self):
        SYNCS.record("Stream.synchronize")

    def record(self, event=None):
        event = Event() if event is None else event
        event.record(self)
        return event

    def use(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    @property
    def done(self) -> bool:
        return True


Stream.null = Stream(null=True)


def get_current_stream(device_id=None) -> Stream:
    return Stream.null


class Device:
    __module__ = "cupy.cuda"

    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)
        if not 0 <= self.id < DEVICE_COUNT[0]:
            raise CUDARuntimeError("cudaErrorInvalidDevice: invalid device ordinal")

    def synchronize(self):
        SYNCS.record("Device.synchronize")

    def use(self):
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def __int__(self):
        return self.id

    compute_capability = property(lambda self: "90")
    mem_info = property(lambda self: (16 * 2**30, 16 * 2**30))


def is_available() -> bool:
    return DEVICE_COUNT[0] > 0


def get_device_id() -> int:
    return 0


def make_modules() -> tuple[types.ModuleType, types.ModuleType]:
    """``(cupy.cuda, cupy.cuda.runtime)`` as module objects holding only the names above."""
    runtime = types.ModuleType("cupy.cuda.runtime")
    for f in (getDeviceCount, getDeviceProperties, deviceSynchronize, runtimeGetVersion, driverGetVersion):
        setattr(runtime, f.__name__, f)
    runtime.CUDARuntimeError = CUDARuntimeError
    cuda = types.ModuleType("cupy.cuda")
    cuda.runtime = runtime
    for obj in (Event, Stream, Device, get_elapsed_time, get_current_stream, is_available, get_device_id):
        setattr(cuda, obj.__name__, obj)
    return cuda, runtime
