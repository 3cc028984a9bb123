"""Datasets: folder resolution, checksums, download, and loaders (MNIST, CIFAR-10, PTB)."""


class DataError(RuntimeError):
    """A data file is missing, corrupt or unreadable; the message says what to put where."""
