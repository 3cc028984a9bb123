"""The minibatch order of a pipeline run: a fixed function of the step, so a resumed run sees the same batches."""

from __future__ import annotations

import numpy as np

__all__ = ["batch_indices"]


def batch_indices(step: int, *, n: int, batch: int, seed: int, cache: dict | None = None) -> np.ndarray:
    """Indices (batch,) of the minibatch of ``step`` (from 1) out of ``n`` examples.

    Step ``t`` takes the ``k``-th batch of epoch ``e`` (``e, k = divmod(t - 1, n // batch)``)
    of the permutation ``default_rng([seed, 1, e])``. ``cache``: a dict kept by the
    caller that holds the current epoch's permutation (computed once per epoch).
    """
    epoch, k = divmod(step - 1, n // batch)
    if cache is not None and cache.get("epoch") == epoch:
        perm = cache["perm"]
    else:
        perm = np.random.default_rng([seed, 1, epoch]).permutation(n)
        if cache is not None:
            cache.update(epoch=epoch, perm=perm)
    return perm[k * batch:(k + 1) * batch]
