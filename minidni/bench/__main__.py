"""``python -m minidni.bench NAME``: benchmarks that print figures and write JSON.

Benchmarks are scripts, never timed unit tests: machines are shared and noisy,
so each one compares ratios measured side by side in one run.
"""

from __future__ import annotations

import sys

from minidni.cli import dispatch

BENCHMARKS = {
    "layers": "minidni.bench.layers:main",
    "feedforward": "minidni.bench.feedforward:main",
    "recurrent": "minidni.bench.recurrent:main",
    "command": "minidni.bench.command:main",
    "parallel": "minidni.bench.parallel:main",
    "torch": "minidni.bench.torch:main",
    "gpu": "minidni.bench.gpu:main",
}

if __name__ == "__main__":
    sys.exit(dispatch("python -m minidni.bench", BENCHMARKS, None))
