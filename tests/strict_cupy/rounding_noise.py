"""Do the CuPy suite's NumPy-parity tests survive a GPU's rounding? Checked without a GPU.

    python tests/strict_cupy/rounding_noise.py [SEED]     # exit code of pytest

Runs the ``matches_numpy`` tests of tests/test_cupy_suite.py in their GPU regime (``DRIFT``
tolerance after the first step) with every new float array the stand-in returns scaled by
``1 + eps * N(0, 1)`` (eps of its dtype): a rounding difference at every operation, about what
a GPU's other summation order and fused multiply-adds give.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy

TESTS = Path(__file__).resolve().parents[1]


def main(seed: int) -> int:
    sys.path.insert(0, str(TESTS))
    import pytest  # noqa: PLC0415

    import test_cupy_suite  # noqa: PLC0415
    from strict_cupy import _array  # noqa: PLC0415

    test_cupy_suite._on_standin = lambda cupy: False  # the GPU regime
    exact, rng = _array.wrap, numpy.random.default_rng(seed)

    def noisy(r, seen):
        out = exact(r, seen)
        fresh = (isinstance(out, _array.ndarray) and out._a.dtype.kind == "f" and out._a.size and out._base is None
                 and out._a.flags.writeable and not any(out is w for w in seen.values()))
        if fresh:  # a new result, not a view or an out= array
            eps = numpy.finfo(out._a.dtype).eps
            out._a *= (1 + eps * rng.standard_normal(out._a.shape)).astype(out._a.dtype)
        return out

    _array.wrap = noisy
    return pytest.main(["-q", "-p", "no:cacheprovider", str(TESTS / "test_cupy_suite.py"), "-k", "matches_numpy"])


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
