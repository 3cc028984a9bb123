"""Data folder resolution, checksums, downloads (with a fake network) and the loaders.

Every test runs with ``urllib.request.urlopen`` replaced by a function that fails the
test, so nothing here can reach the network; download tests install their own fake.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import re
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from minidni.data import (DataError, load_cifar10, load_mnist, load_ptb_chars, load_ptb_words,
                          resolve_data_dir)
from minidni.data import checksums, download, mnist_or_standin
from minidni.data.__main__ import main as data_main
from minidni.data.mnist import read_idx
from minidni.data.paths import MNIST_FILES


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a test tried to use the network")
    monkeypatch.setattr(urllib.request, "urlopen", forbidden)
    monkeypatch.delenv(download.OFFLINE_ENV, raising=False)
    checksums.clear_cache()


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


# -- tiny generated datasets ----------------------------------------------------------------
def write_idx(path: Path, array: np.ndarray, magic: int, *, gz: bool = True) -> Path:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def make_mnist(root: Path, n_train: int = 5, n_test: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {"xtr": rng.integers(0, 256, (n_train, 28, 28)), "ytr": rng.integers(0, 10, n_train),
              "xte": rng.integers(0, 256, (n_test, 28, 28)), "yte": rng.integers(0, 10, n_test)}
    for name, key, magic in zip(MNIST_FILES, ("xtr", "ytr", "xte", "yte"), (2051, 2049, 2051, 2049)):
        write_idx(root / "mnist" / name, arrays[key], magic)
    return arrays


def make_cifar(root: Path, n: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    out = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n, 3072)).astype(np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                 b"filenames": [b"x.png"] * n}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        out[name] = (data, labels)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=2))
    return out


WORDS = {"train": "the cat sat\n a dog <unk> ran\n", "valid": "a cat\n", "test": "the dog sat\n"}


def to_char_file(text: str) -> str:
    """Mikolov's mapping: characters spaced, words joined by ' _ ', lines ending in ' \\n '."""
    lines = [" _ ".join(" ".join(w) for w in line.split()) for line in text.strip("\n").split("\n")]
    return "\n ".join(lines) + "\n "


def make_ptb(root: Path, words: dict[str, str] = WORDS) -> None:
    folder = root / "ptb"
    folder.mkdir(parents=True)
    for split, text in words.items():
        (folder / f"ptb.{split}.txt").write_text(" " + text.replace("\n", " \n "))
        (folder / f"ptb.char.{split}.txt").write_text(to_char_file(text))


# -- folder resolution ----------------------------------------------------------------------
def test_data_dir_resolution_order(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("MINIDNI_DATA", raising=False)
    assert resolve_data_dir() == tmp_path / "xdg" / "minidni"
    monkeypatch.setenv("MINIDNI_DATA", str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "opt") == tmp_path / "opt"
    monkeypatch.delenv("MINIDNI_DATA")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_dir() == tmp_path / "home" / ".cache" / "minidni"
    monkeypatch.chdir(tmp_path)
    assert resolve_data_dir("rel/../data") == tmp_path / "data"      # absolute and normalised


# -- MNIST ----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_load_mnist_generated(tmp_path, dtype):
    arrays = make_mnist(tmp_path)
    m = load_mnist(tmp_path, dtype=dtype, download=False, verify=False)
    assert m.x_train.shape == (5, 784) and m.x_test.shape == (3, 784)
    assert m.x_train.dtype == dtype and m.y_train.dtype == np.int64
    np.testing.assert_allclose(m.x_train, arrays["xtr"].reshape(5, -1) / 255, rtol=1e-6)
    np.testing.assert_array_equal(m.y_test, arrays["yte"])
    assert 0.0 <= m.x_train.min() and m.x_train.max() <= 1.0


def test_mnist_checksum_mismatch(tmp_path):
    make_mnist(tmp_path)
    with pytest.raises(DataError) as exc:
        load_mnist(tmp_path, download=False)
    msg = _one_line(exc)
    assert str(tmp_path / "mnist" / "train-images-idx3-ubyte.gz") in msg and "sha256" in msg


def test_read_idx_rejects_corrupt_files(tmp_path):
    img = np.zeros((2, 28, 28), np.uint8)
    good = write_idx(tmp_path / "good.gz", img, 2051)
    assert read_idx(good, 2051).shape == (2, 28, 28)
    cases = {
        "magic number 2049, expected 2051": write_idx(tmp_path / "labels.gz", np.zeros(3), 2049),
        "truncated: header says 2x28x28 = 1568 bytes of data, found 1000":
            tmp_path / "short.gz",
        "too long": tmp_path / "long.gz",
        "truncated inside its header": tmp_path / "header.gz",
        "not a readable gzip file": tmp_path / "notgz.gz",
        "not a readable gzip file (Compressed file ended": tmp_path / "cut.gz",
    }
    raw = gzip.decompress(good.read_bytes())
    (tmp_path / "short.gz").write_bytes(gzip.compress(raw[:16 + 1000]))
    (tmp_path / "long.gz").write_bytes(gzip.compress(raw + b"\0"))
    (tmp_path / "header.gz").write_bytes(gzip.compress(raw[:10]))
    (tmp_path / "notgz.gz").write_bytes(b"this is not gzip data at all")
    (tmp_path / "cut.gz").write_bytes(good.read_bytes()[:40])
    for expected, path in cases.items():
        with pytest.raises(DataError) as exc:
            read_idx(path, 2051)
        msg = _one_line(exc)
        assert str(path) in msg and expected in msg, msg


def test_mnist_label_checks(tmp_path):
    make_mnist(tmp_path)
    write_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz", np.array([1, 2]), 2049)
    with pytest.raises(DataError, match=r"\(2,\) labels for 3 images"):
        load_mnist(tmp_path, download=False, verify=False)
    write_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz", np.array([1, 2, 11]), 2049)
    with pytest.raises(DataError, match="label 11, expected 0..9"):
        load_mnist(tmp_path, download=False, verify=False)
    with pytest.raises(ValueError, match="int32 is not a floating dtype"):
        load_mnist(tmp_path, dtype=np.int32)


# -- missing files and downloads ------------------------------------------------------------
def test_missing_file_offline_message(tmp_path):
    with pytest.raises(DataError) as exc:
        load_mnist(tmp_path, download=False)
    msg = _one_line(exc)
    assert str(tmp_path / "mnist" / "train-images-idx3-ubyte.gz") in msg
    assert "http://yann.lecun.com/exdb/mnist/train-images-idx3-ubyte.gz" in msg
    assert f"python -m minidni.data download mnist --data-dir {tmp_path}" in msg


def test_offline_env_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setenv(download.OFFLINE_ENV, "1")
    with pytest.raises(DataError, match="ptb file missing: .*ptb.char.train.txt"):
        load_ptb_chars(tmp_path)                    # download=True, but $MINIDNI_OFFLINE wins


def test_failed_download_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def unreachable(url, timeout):
        calls.append((url, timeout))
        raise urllib.error.URLError("Name or service not known")
    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    with pytest.raises(DataError) as exc:
        load_mnist(tmp_path)
    msg = _one_line(exc)
    assert "could not download train-images-idx3-ubyte.gz" in msg and "Name or service not known" in msg
    assert str(tmp_path / "mnist" / "train-images-idx3-ubyte.gz") in msg
    assert [u for u, _ in calls] == [u + "train-images-idx3-ubyte.gz" for u in download.MNIST_URLS]
    assert all(t == download.DEFAULT_TIMEOUT for _, t in calls)   # first failure stops the request
    assert list((tmp_path / "mnist").iterdir()) == []


class _FakeResponse(io.BytesIO):
    def __init__(self, payload: bytes):
        super().__init__(payload)
        self.headers = {"Content-Length": str(len(payload))}


def _serve(monkeypatch, payloads: dict[str, bytes]):
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: _FakeResponse(payloads[url]))


def test_download_single_file_verified_and_atomic(tmp_path, monkeypatch):
    payload = b"pretend this is an IDX file"
    rel = "mnist/t10k-labels-idx1-ubyte.gz"
    src = download.source_of(rel)
    monkeypatch.setitem(checksums.SHA256, rel, hashlib.sha256(payload).hexdigest())
    _serve(monkeypatch, {src.urls[0]: payload})
    download.ensure_files(tmp_path, [rel])
    assert (tmp_path / rel).read_bytes() == payload
    monkeypatch.setitem(checksums.SHA256, rel, "0" * 64)
    (tmp_path / rel).unlink()
    _serve(monkeypatch, {u: payload for u in src.urls})
    with pytest.raises(DataError, match="is corrupt: sha256"):
        download.ensure_files(tmp_path, [rel])
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == []   # no partial or bad file


def _tarball(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_download_archive_extracts_only_wanted_members(tmp_path, monkeypatch):
    blob = _tarball({"./pack/data/a.txt": b"alpha", "../evil.txt": b"x", "pack/data/b.txt": b"beta"})
    src = download.Source("ptb", ("http://example.invalid/pack.tgz",), ("ptb/a.txt", "ptb/b.txt"),
                          ("pack/data/a.txt", "pack/data/b.txt"), hashlib.md5(blob).hexdigest())
    _serve(monkeypatch, {src.urls[0]: blob})
    download.fetch(src, tmp_path)
    assert (tmp_path / "ptb/a.txt").read_bytes() == b"alpha" and (tmp_path / "ptb/b.txt").read_bytes() == b"beta"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ptb"]            # archive removed
    assert not (tmp_path.parent / "evil.txt").exists()
    bad = download.Source("ptb", src.urls, ("ptb/c.txt",), ("pack/data/a.txt",), "0" * 32)
    with pytest.raises(DataError, match="is corrupt: md5"):
        download.fetch(bad, tmp_path)
    assert not (tmp_path / "ptb/c.txt").exists()


def test_cifar_sources_match_the_official_tarball():
    src = download.source_of("cifar-10-batches-py/test_batch")
    assert src.md5 == "c58f30108f718f92721af3b95e74349a"
    assert src.urls == ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",)
    assert len(download.dataset_files("cifar10")) == 7 and len(download.dataset_files("ptb")) == 6


# -- checksum cache -------------------------------------------------------------------------
def test_verify_file_is_cached_per_process(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 3_000_000)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    calls = []
    real = checksums.file_digest
    monkeypatch.setattr(checksums, "file_digest", lambda p, a="sha256": calls.append(p) or real(p, a))
    checksums.verify_file(path, digest)
    checksums.verify_file(path, digest)
    assert len(calls) == 1
    path.write_bytes(b"y" * 3_000_001)                 # changed file: hashed again, and rejected
    with pytest.raises(DataError, match="is corrupt or not the expected file"):
        checksums.verify_file(path, digest)
    assert len(calls) == 2


# -- CIFAR-10 -------------------------------------------------------------------------------
def test_load_cifar10_generated(tmp_path):
    batches = make_cifar(tmp_path)
    c = load_cifar10(tmp_path, download=False)
    assert c.x_train.shape == (20, 3, 32, 32) and c.x_test.shape == (4, 3, 32, 32)
    assert c.x_train.dtype == np.float32 and c.y_train.dtype == np.int64
    data, labels = batches["test_batch"]
    np.testing.assert_allclose(c.x_test[:, 0].reshape(4, -1), data[:, :1024] / 255, rtol=1e-6)  # red first
    np.testing.assert_allclose(c.x_test[:, 2].reshape(4, -1), data[:, 2048:] / 255, rtol=1e-6)
    np.testing.assert_array_equal(c.y_test, labels)
    np.testing.assert_array_equal(c.y_train[4:8], batches["data_batch_2"][1])
    assert len(c) == 4
    (tmp_path / "cifar-10-batches-py" / "batches.meta").write_bytes(
        pickle.dumps({b"label_names": [b"x"] * 10}, protocol=2))
    with pytest.raises(DataError, match="names the classes"):
        load_cifar10(tmp_path, download=False)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("content,expected", [
    (b"garbage", "is not a CIFAR-10 python batch"),
    (pickle.dumps({b"data": _Exploit()}, protocol=2), "unexpected object"),
    (pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, protocol=2),
     r"b'data' is uint8 \(2, 100\), expected a uint8 array \(N, 3072\)"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, protocol=2), r"\(1,\) labels for 2"),
    (pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [10]}, protocol=5), "labels must be 0..9"),
    (pickle.dumps([1, 2], protocol=2), "holds a list, expected a dict"),
])
def test_cifar10_rejects_bad_batches(tmp_path, content, expected):
    make_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(content)
    with pytest.raises(DataError) as exc:
        load_cifar10(tmp_path, download=False)
    msg = _one_line(exc)
    assert str(path) in msg
    assert re.search(expected, msg), msg


def test_cifar10_missing_names_path_and_source(tmp_path):
    with pytest.raises(DataError) as exc:
        load_cifar10(tmp_path, download=False)
    msg = _one_line(exc)
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_1") in msg and "cifar-10-python.tar.gz" in msg


# -- PTB ------------------------------------------------------------------------------------
def test_load_ptb_chars_generated(tmp_path):
    make_ptb(tmp_path)
    p = load_ptb_chars(tmp_path, download=False, verify=False)
    assert list(p.vocab) == sorted(set("thecatsadog<unk>rn_\n"))
    assert p.vocab[0] == "\n" and p.train.dtype == np.int64
    decoded = "".join(p.vocab[i] for i in p.train)
    assert decoded == "the_cat_sat\na_dog_<unk>_ran\n"
    assert "".join(p.vocab[i] for i in p.test) == "the_dog_sat\n"


def test_ptb_chars_unknown_symbol_and_word_file(tmp_path):
    make_ptb(tmp_path, dict(WORDS, valid="a zebra\n"))
    with pytest.raises(DataError) as exc:
        load_ptb_chars(tmp_path, download=False, verify=False)
    assert "symbol 'z' does not occur in the training file" in _one_line(exc)
    (tmp_path / "ptb" / "ptb.char.train.txt").write_text(" the cat \n")
    with pytest.raises(DataError, match="longer than one character"):
        load_ptb_chars(tmp_path, download=False, verify=False)


def test_load_ptb_words_generated(tmp_path):
    make_ptb(tmp_path)
    w = load_ptb_words(tmp_path, download=False, verify=False)
    assert " ".join(w.vocab[i] for i in w.valid) == "a cat <eos>"
    assert "<eos>" in w.vocab and len(w.train) == 9
    with pytest.raises(DataError, match="is corrupt or not the expected file"):
        load_ptb_words(tmp_path, download=False)


# -- command line ---------------------------------------------------------------------------
def test_data_command_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        data_main(["verify", "bogus"])
    assert exc.value.code == 2
    assert "unknown dataset 'bogus'" in capsys.readouterr().err
    assert data_main(["verify", "ptb", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ptb file missing" in err


# -- the real files (skipped without ../shared/data) -----------------------------------------
def test_real_mnist(shared_data_dir):
    m = load_mnist(shared_data_dir, download=False)
    assert m.x_train.shape == (60000, 784) and m.x_test.shape == (10000, 784)
    np.testing.assert_array_equal(np.bincount(m.y_train),
                                  [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
    assert m.x_train.dtype == np.float32 and m.x_train.max() == 1.0 and m.x_train.min() == 0.0


def test_real_ptb(shared_data_dir):
    c = load_ptb_chars(shared_data_dir, download=False)
    assert len(c.vocab) == 50 and c.vocab[0] == "\n" and "_" in c.vocab
    # README word counts (one per character token) plus one line break per line
    assert (len(c.train), len(c.valid), len(c.test)) == (4975414 + 42068, 389672 + 3370, 438662 + 3761)
    w = load_ptb_words(shared_data_dir, download=False)
    assert len(w.vocab) == 10000 and len(w.train) == 887521 + 42068


# -- MNIST or its stand-in (notebooks) ------------------------------------------------------
def test_standin_when_no_folder_has_usable_mnist(tmp_path, capsys):
    make_mnist(tmp_path)  # generated files: their checksums are not the official ones
    xtr, ytr, xte, yte = mnist_or_standin(30, 20, folders=[None, tmp_path / "nothing", tmp_path])
    out = capsys.readouterr().out
    assert "is not usable" in out and "stand-in" in out
    assert xtr.shape == (30, 784) and xte.shape == (20, 784) and xtr.dtype == np.float32
    assert set(np.unique(xtr)) <= {0.0, 1.0} and ytr.min() >= 0 and yte.max() <= 9
    again = mnist_or_standin(30, 20, folders=[])
    np.testing.assert_array_equal(again[0], xtr)  # seeded: the same stand-in every time
    with pytest.raises(ValueError, match=r"flip must be in \[0, 0.5\).*got 0.7"):
        mnist_or_standin(3, 2, folders=[], flip=0.7)


def test_standin_gives_mnist_when_a_folder_has_it(shared_data_dir):
    xtr, ytr, xte, yte = mnist_or_standin(7, 4, folders=[None, shared_data_dir])
    ref = load_mnist(shared_data_dir, download=False)
    np.testing.assert_array_equal(xtr, ref.x_train[:7])
    np.testing.assert_array_equal(yte, ref.y_test[:4])
