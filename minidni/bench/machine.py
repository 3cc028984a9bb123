"""What a benchmark's JSON records about the machine: the BLAS it ran on (library, kernel = core type,
threads) and the load average.

``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE`` change which kernel OpenBLAS runs (and so every
GEMM's speed); they are recorded as found, beside what threadpoolctl reports.
"""

from __future__ import annotations

import os

__all__ = ["blas_info", "load_average"]

BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def blas_info() -> dict:
    """``{"threadpools": [...], "env": {...}}``: threadpoolctl's view of the loaded BLAS libraries
    (internal API, version, architecture = kernel, threads) and the BLAS environment variables."""
    env = {k: os.environ.get(k) for k in BLAS_ENV}
    try:
        from threadpoolctl import threadpool_info  # noqa: PLC0415  (a dev/bench dependency)
    except ImportError:
        return {"threadpools": None, "note": "threadpoolctl is not installed (pip install threadpoolctl)", "env": env}
    import numpy  # noqa: F401, PLC0415  (loads NumPy's BLAS, so threadpoolctl can see it)

    keep = ("user_api", "internal_api", "version", "architecture", "num_threads", "threading_layer")
    return {"threadpools": [{k: lib.get(k) for k in keep} for lib in threadpool_info()], "env": env}


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, rounded to 0.01, or None where the OS has none."""
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
