"""Checksums of the data files, and chunked, per-process cached verification.

The SHA-256 values are those listed in ``../shared/data/README.md`` (the MNIST ones
are the files whose MD5s equal LeCun's; the PTB ones are Mikolov's simple-examples
files). CIFAR-10 is checked once, as the official tarball's MD5, when it is
downloaded; its extracted batch files are checked for structure instead.

Hashing 10 MB takes tens of milliseconds, so :func:`verify_file` remembers every
file it has accepted (by path, size and modification time) for the rest of the
process: loading the same data twice does not hash it twice.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from minidni.data import DataError

SHA256 = {
    "mnist/train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "mnist/train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "mnist/t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "mnist/t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    "ptb/ptb.train.txt": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
    "ptb/ptb.valid.txt": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
    "ptb/ptb.test.txt": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
    "ptb/ptb.char.train.txt": "e313d91425e06c4f0a8fb6e881dcce0c291f2a0e9f4dda54833069b122f91da9",
    "ptb/ptb.char.valid.txt": "21661f63ec355085879458b6524644d4add5573541b4be14fb52ab2e2e995eb8",
    "ptb/ptb.char.test.txt": "1ef5607ac3c463b16e38bfe7900dd3bfc91de5a96e0f21e7eab5188b465b8ebe",
}
CIFAR10_TARBALL_MD5 = "c58f30108f718f92721af3b95e74349a"

CHUNK = 1 << 20
_verified: set[tuple[str, int, int, str]] = set()


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_file(path: str | os.PathLike, expected: str, algorithm: str = "sha256") -> None:
    """Raise :class:`DataError` unless ``path``'s digest equals ``expected`` (cached per process)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, expected)
    if key in _verified:
        return
    got = file_digest(path, algorithm)
    if got != expected:
        raise DataError(f"{path} is corrupt or not the expected file: its {algorithm} is {got}, "
                        f"expected {expected}; delete it and put the original file there")
    _verified.add(key)


def clear_cache() -> None:
    """Forget which files were verified (tests use it)."""
    _verified.clear()
