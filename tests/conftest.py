"""Shared test configuration: Hypothesis profiles and the backend fixture.

Profiles: ``dev`` (default, 25 examples per property) and ``thorough`` (200);
choose with ``HYPOTHESIS_PROFILE=thorough pytest``. Deadlines are off because
CI machines are shared and noisy; speed lives in ``python -m minidni.bench``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from minidni import backend

settings.register_profile("dev", max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=200, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(params=["numpy", "cupy"])
def xp(request):
    """Each backend's array module; the CuPy case skips with a reason without a GPU."""
    if request.param == "cupy" and not backend.cupy_available():
        pytest.skip("CuPy backend: CuPy is not installed or no NVIDIA GPU is visible")
    return backend.set_backend(request.param)


@pytest.fixture(autouse=True)
def _reset_backend():
    """Every test starts (and ends) on the NumPy backend."""
    backend.set_backend("numpy")
    yield
    backend.set_backend("numpy")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def shared_data_dir():
    """``../shared/data`` when this checkout has it, else skip (tests needing real data)."""
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATA}")
    return SHARED_DATA
