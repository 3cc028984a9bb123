"""``python -m minidni.data download|verify [DATASET ...] [--data-dir DIR]``.

download: fetch whatever is missing of each dataset (default: mnist and ptb) and verify it.
verify:   check that each dataset's files are present, then load them (checksums for MNIST
          and PTB, structure for all), printing one line per dataset.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from minidni.cli import float_range, make_parser, parse_or_exit, run_command
from minidni.data.download import DATASETS, DEFAULT_TIMEOUT, dataset_files, ensure_files
from minidni.data.paths import resolve_data_dir

PROG = "python -m minidni.data"


def _check(dataset: str, root: Path) -> str:
    from minidni import data

    if dataset == "mnist":
        m = data.load_mnist(root, download=False)
        return f"mnist: {len(m.x_train)} train / {len(m.x_test)} test images, checksums OK"
    if dataset == "ptb":
        c, w = data.load_ptb_chars(root, download=False), data.load_ptb_words(root, download=False)
        return (f"ptb: {len(c.vocab)} characters ({len(c.train)} train ids), "
                f"{len(w.vocab)} words ({len(w.train)} train ids), checksums OK")
    x = data.load_cifar10(root, download=False, dtype="float32")
    return f"cifar10: {len(x.x_train)} train / {len(x.x_test)} test images, structure OK"


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser(PROG, "Download or verify the datasets minidni uses.")
    parser.add_argument("action", choices=("download", "verify"))
    parser.add_argument("datasets", nargs="*", metavar="DATASET",
                        help=f"any of {', '.join(DATASETS)} (default: mnist ptb)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="data folder (default: $MINIDNI_DATA, then the user cache folder)")
    parser.add_argument("--timeout", type=float_range(0.0, 3600.0, lo_open=True), default=DEFAULT_TIMEOUT,
                        help="seconds per network operation, > 0 and at most 3600")
    args = parse_or_exit(parser, argv)
    if isinstance(args, int):  # --help, or a bad option already reported in one line
        return args
    unknown = [d for d in args.datasets if d not in DATASETS]
    if unknown:
        parser.error(f"unknown dataset {unknown[0]!r}; choose from {', '.join(DATASETS)}")

    def body() -> int:
        root = resolve_data_dir(args.data_dir)
        for dataset in args.datasets or ("mnist", "ptb"):
            if args.action == "download":
                ensure_files(root, dataset_files(dataset), download=True, timeout=args.timeout)
            print(_check(dataset, root))
        return 0

    return run_command(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
