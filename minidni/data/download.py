"""Fetching missing data files from their official sources, or saying where to put them.

:func:`ensure_files` is what the loaders call. For each missing file it either
downloads it (``download=True``) or raises a one-line :class:`DataError` naming the
full path it expects, where to get the file, and the command that fetches it.

Downloads are ON by default in the loaders because they fail fast: a machine without
a network fails at name resolution in well under a second, and every connection has
a ``timeout`` (default 15 s, per socket operation). The first failure stops the whole
request with a one-line DataError (no retries beyond a listed mirror). Set
``MINIDNI_OFFLINE=1`` (or pass ``download=False``) to never touch the network.

Every download goes to a temporary file next to its target and is renamed into place
(``os.replace``) only after its checksum matched, so an interrupted or corrupt download
never leaves a file that looks valid. Sources:

- MNIST: http://yann.lecun.com/exdb/mnist/ (official), then the PyTorch mirror
  https://ossci-datasets.s3.amazonaws.com/mnist/ (same bytes; SHA-256 checked).
- PTB: Mikolov's http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz, from which
  ``data/ptb.*.txt`` (word and char files) are extracted and SHA-256 checked.
- CIFAR-10: https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (MD5 checked), from
  which ``cifar-10-batches-py/*`` are extracted; the tarball is deleted afterwards.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterable

from minidni.data import DataError
from minidni.data.checksums import CHUNK, CIFAR10_TARBALL_MD5, SHA256
from minidni.data.paths import (CIFAR10_DIR, CIFAR10_FILES, MNIST_FILES, PTB_CHAR_FILES,
                                PTB_WORD_FILES, describe_resolution)

OFFLINE_ENV = "MINIDNI_OFFLINE"
DEFAULT_TIMEOUT = 15.0
MNIST_URLS = ("http://yann.lecun.com/exdb/mnist/", "https://ossci-datasets.s3.amazonaws.com/mnist/")
PTB_URL = "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


@dataclass(frozen=True)
class Source:
    """One download: ``urls`` (tried in order) giving either one file or an archive of ``files``.

    ``members`` maps each provided relative path to its name inside the archive
    (empty for a plain file); ``md5`` checks the downloaded archive when known.
    """
    dataset: str
    urls: tuple[str, ...]
    files: tuple[str, ...]
    members: tuple[str, ...] = ()
    md5: str | None = None


def _sources() -> list[Source]:
    out = [Source("mnist", tuple(u + name for u in MNIST_URLS), (f"mnist/{name}",)) for name in MNIST_FILES]
    ptb = PTB_WORD_FILES + PTB_CHAR_FILES
    out.append(Source("ptb", (PTB_URL,), tuple(f"ptb/{n}" for n in ptb),
                      tuple(f"simple-examples/data/{n}" for n in ptb)))
    out.append(Source("cifar10", (CIFAR10_URL,), tuple(f"{CIFAR10_DIR}/{n}" for n in CIFAR10_FILES),
                      tuple(f"{CIFAR10_DIR}/{n}" for n in CIFAR10_FILES), CIFAR10_TARBALL_MD5))
    return out


SOURCES = _sources()
DATASETS = ("mnist", "ptb", "cifar10")


def source_of(relpath: str) -> Source:
    """The :class:`Source` that provides ``relpath`` (e.g. ``"mnist/t10k-labels-idx1-ubyte.gz"``)."""
    for src in SOURCES:
        if relpath in src.files:
            return src
    raise KeyError(relpath)


def offline() -> bool:
    """True when ``$MINIDNI_OFFLINE`` is set to a non-empty value other than 0."""
    return os.environ.get(OFFLINE_ENV, "") not in ("", "0")


def _fetch_hint(src: Source, data_dir: Path) -> str:
    return (f"get it from {src.urls[0]}"
            + (" (extract it from that archive)" if src.members else "")
            + f", or run `python -m minidni.data download {src.dataset} --data-dir {data_dir}` "
              f"on a machine with network access; {describe_resolution()}")


def missing_error(data_dir: Path, relpath: str) -> DataError:
    """The one-line error for a missing file: full path, source, and how to fetch it."""
    src = source_of(relpath)
    return DataError(f"{src.dataset} file missing: {data_dir / relpath}; put it there "
                     f"({_fetch_hint(src, data_dir)})")


def _copy_hashing(resp: BinaryIO, f: BinaryIO, h: Any, total: int | None, label: str) -> None:
    from tqdm import tqdm

    with tqdm(total=total, unit="B", unit_scale=True, desc=label, disable=None, file=sys.stderr) as bar:
        for chunk in iter(lambda: resp.read(CHUNK), b""):
            f.write(chunk)
            h.update(chunk)
            bar.update(len(chunk))


def _download_to(src: Source, dest: Path, data_dir: Path, timeout: float, algorithm: str,
                 expected: str | None) -> None:
    """Download ``src`` (first URL that works) into ``dest`` atomically, checking its digest."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in src.urls:
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        try:
            h = hashlib.new(algorithm)
            with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=timeout) as resp:
                length = resp.headers.get("Content-Length")
                _copy_hashing(resp, f, h, int(length) if length else None, dest.name)
            if expected is not None and h.hexdigest() != expected:
                raise DataError(f"download of {url} is corrupt: {algorithm} {h.hexdigest()}, expected {expected}")
            os.replace(tmp, dest)
            return
        except (OSError, http.client.HTTPException, ValueError, DataError) as exc:
            errors.append(f"{url}: {getattr(exc, 'reason', exc)}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise DataError(f"could not download {dest.name} ({'; '.join(errors)}); put "
                    + (f"{dest} there by hand" if not src.members else f"the files of {src.urls[0]} "
                       f"under {data_dir} by hand") + f" ({_fetch_hint(src, data_dir)})")


def _extract(archive: Path, src: Source, data_dir: Path) -> None:
    """Copy the wanted members of ``archive`` to their places, atomically, in one pass.

    Output paths come from ``src.files``, never from the archive's own member names.
    """
    wanted = dict(zip(src.members, src.files))
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            name = member.name[2:] if member.name.startswith("./") else member.name
            if not member.isfile() or name not in wanted:
                continue
            dest = data_dir / wanted.pop(name)
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as f, tar.extractfile(member) as data:
                    shutil.copyfileobj(data, f, CHUNK)
                os.replace(tmp, dest)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
    if wanted:
        raise DataError(f"the archive from {src.urls[0]} lacks {sorted(wanted)}; {_fetch_hint(src, data_dir)}")


def fetch(src: Source, data_dir: Path, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Download ``src`` into ``data_dir`` and verify every file it provides."""
    from minidni.data.checksums import verify_file

    if not src.members:
        relpath = src.files[0]
        _download_to(src, data_dir / relpath, data_dir, timeout, "sha256", SHA256[relpath])
        return
    archive = data_dir / f".{src.urls[0].rsplit('/', 1)[-1]}"
    _download_to(src, archive, data_dir, timeout, "md5" if src.md5 else "sha256", src.md5)
    try:
        _extract(archive, src, data_dir)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"could not unpack {src.urls[0]} ({exc}); {_fetch_hint(src, data_dir)}") from None
    finally:
        archive.unlink(missing_ok=True)
    for relpath in src.files:
        if relpath in SHA256:
            verify_file(data_dir / relpath, SHA256[relpath])


def ensure_files(data_dir: Path, relpaths: Iterable[str], *, download: bool = True,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
    """Make sure every ``data_dir / relpath`` exists: download what is missing, or raise.

    Raises :class:`DataError` (one line) for the first file that is missing and cannot be
    downloaded (``download=False``, ``$MINIDNI_OFFLINE`` set, or the download failed).
    """
    fetched: set[Source] = set()
    for relpath in relpaths:
        if (data_dir / relpath).is_file():
            continue
        src = source_of(relpath)
        if not download or offline():
            raise missing_error(data_dir, relpath)
        if src not in fetched:
            fetch(src, data_dir, timeout=timeout)
            fetched.add(src)
        if not (data_dir / relpath).is_file():
            raise missing_error(data_dir, relpath)


def dataset_files(dataset: str) -> tuple[str, ...]:
    """Every relative path of ``dataset`` (``mnist``, ``ptb`` or ``cifar10``)."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {DATASETS}")
    return tuple(f for src in SOURCES if src.dataset == dataset for f in src.files)
