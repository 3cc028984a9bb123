"""Shared test configuration: Hypothesis profiles, the backend fixture and the CuPy suite.

Profiles: ``dev`` (default, 25 examples per property) and ``thorough`` (200);
choose with ``HYPOTHESIS_PROFILE=thorough pytest``. Deadlines are off because
CI machines are shared and noisy; speed lives in ``python -m minidni.bench``.

The CuPy suite (marker ``cupy``: the ``xp`` fixture's ``cupy`` case and
tests/test_cupy_suite.py; ``pytest -m cupy`` runs only it) runs on real CuPy where
CuPy sees an NVIDIA GPU, else on the strict stand-in ``tests/strict_cupy`` put into
``sys.modules`` as ``cupy`` (``--no-cupy-standin``: skip those cases instead).
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


REAL_CUPY = backend.cupy_available()  # read before any test can put the stand-in in its place


def pytest_addoption(parser):
    parser.addoption("--no-cupy-standin", action="store_true",
                     help="without a GPU, skip the CuPy cases instead of running them on tests/strict_cupy")


@pytest.fixture
def standin_cupy(monkeypatch):
    """The strict stand-in as ``cupy`` for this test (its sync record cleared), also where a GPU exists."""
    import strict_cupy as standin  # noqa: PLC0415  (tests/ is on the import path)

    return standin.install(monkeypatch)


@pytest.fixture
def cupy(request):
    """Real CuPy where it sees a GPU, else the strict stand-in (or a skip with ``--no-cupy-standin``)."""
    if REAL_CUPY:
        import cupy as real  # noqa: PLC0415

        return real
    if request.config.getoption("--no-cupy-standin"):
        pytest.skip("CuPy backend: CuPy is not installed or no NVIDIA GPU is visible (--no-cupy-standin)")
    return request.getfixturevalue("standin_cupy")


@pytest.fixture(params=["numpy", pytest.param("cupy", marks=pytest.mark.cupy)])
def xp(request):
    """Each backend's array module: NumPy, and CuPy (real on a GPU, else the strict stand-in)."""
    if request.param == "cupy":
        request.getfixturevalue("cupy")
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
