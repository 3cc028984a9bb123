"""``python -m minidni.run TASK [options]``: train and reproduce the paper's experiments.

Tasks:
    copy, repeat-copy, ptb   recurrent DNI with truncated BPTT (Table 2)
    table2                   the Table 2 grid (task x mode x T x seeds)
    calibrate                the Copy protocol chosen on the BPTT baseline (phase x curriculum unit)
    ptb-time                 finished ptb runs compared in training time (DNI T=8 vs BPTT T=40)
    mnist, cifar10           feed-forward DNI / cDNI (Table 1); --workers K runs on Ray
    table1                   the Table 1 MNIST FCN rows
    multinet                 two LSTMs at two clock rates joined by a DNI (locked | dni | none)
    bp-lambda                SG targets mixing backpropagated and predicted credit: Copy and MNIST (BP(λ))
Run ``python -m minidni.run TASK --help`` for each task's options.
"""

from __future__ import annotations

import sys
from typing import Sequence

from minidni.cli import dispatch

TASKS = {
    "copy": "minidni.experiments.recurrent:main_copy",
    "repeat-copy": "minidni.experiments.recurrent:main_repeat_copy",
    "ptb": "minidni.experiments.recurrent:main_ptb",
    "table2": "minidni.experiments.table2:main",
    "calibrate": "minidni.experiments.calibrate:main",
    "ptb-time": "minidni.experiments.ptb_time:main",
    "mnist": "minidni.experiments.feedforward:main_mnist",
    "cifar10": "minidni.experiments.feedforward:main_cifar10",
    "table1": "minidni.experiments.table1:main",
    "multinet": "minidni.experiments.multinet:main",
    "bp-lambda": "minidni.experiments.bp_lambda:main",
}


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch("python -m minidni.run", TASKS, argv)


if __name__ == "__main__":
    sys.exit(main())
