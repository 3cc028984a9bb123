"""Datasets: folder resolution, checksums, download, and loaders (MNIST, CIFAR-10, PTB).

    load_mnist(data_dir=None, *, dtype=np.float32, download=True, verify=True) -> MNIST
    load_cifar10(data_dir=None, *, dtype=np.float32, download=True) -> CIFAR10
    load_ptb_chars(data_dir=None, *, download=True, verify=True) -> PTB
    load_ptb_words(data_dir=None, *, download=True, verify=True) -> PTB
    resolve_data_dir(data_dir=None) -> Path     (--data-dir, else $MINIDNI_DATA, else the user cache)
    mnist_or_standin(n_train, n_test, *, folders) -> arrays   (MNIST if found, else a synthetic stand-in)

Missing files are downloaded (``download=True``, fails fast offline; ``$MINIDNI_OFFLINE=1``
disables it) or reported as a one-line :class:`DataError` naming the full path and the
source. ``python -m minidni.data download|verify [mnist ptb cifar10]`` does it by hand.
"""


class DataError(RuntimeError):
    """A data file is missing, corrupt or unreadable; the message says what to put where."""


from minidni.data.cifar10 import CIFAR10, load_cifar10  # noqa: E402  (modules import DataError)
from minidni.data.mnist import MNIST, load_mnist  # noqa: E402
from minidni.data.paths import resolve_data_dir  # noqa: E402
from minidni.data.ptb import PTB, load_ptb_chars, load_ptb_words  # noqa: E402
from minidni.data.standin import mnist_or_standin  # noqa: E402

__all__ = ["DataError", "CIFAR10", "MNIST", "PTB", "load_cifar10", "load_mnist", "load_ptb_chars",
           "load_ptb_words", "mnist_or_standin", "resolve_data_dir"]
