"""Flat parameter and gradient buffers: one contiguous array per dtype, the layers hold views into it.

A model's parameters are many small arrays; an optimiser step, a gradient norm or
a clip over them is then many small operations (each with its temporaries, and on
a GPU each a kernel launch). :class:`FlatParams` copies the parameters of some
layers into one 1-D buffer per dtype and rebinds every layer's ``params[name]``
to a *view* of its slice, so the layer code does not change, while the same
arithmetic over all parameters becomes a few whole-buffer in-place operations
(the idea of PyTorch's ``_foreach``/fused optimisers and apex's multi-tensor apply):

    >>> flat = FlatParams({"lstm": lstm, "head": head})  # lstm.params["Wx"] is now flat.params["lstm.Wx"]
    >>> flat.gather({"head.W": dW, ...})                 # copy gradients into flat.grads (skips its own views)
    >>> norm = flat.clip_grads(max_norm=1.0)             # global-norm clip in place; norm is a 0-d array
    >>> opt = FlatAdam(flat, lr=1e-3); opt.step()        # minidni.optim: the fused step over the buffers

Layout. Keys are ``"<name>.<param>"`` (``"<param>"`` for the name ``""``), a
:class:`~minidni.layers.Sequential` contributing ``"<name>.<i>.<param>"`` like its
own ``params``; per dtype, the tensors follow each other in key order, each
starting at a multiple of :data:`ALIGN` elements (256 bytes in float32, what
cuBLAS and AVX-512 like). The gaps are zero in every buffer and stay zero (their
gradient is 0, so no update moves them), so a whole-buffer norm or step is the
same as one over the tensors. Build the :class:`FlatParams` *before* anything
keeps references to the old arrays (optimisers, dicts of params): the old arrays
are not updated any more. Flattening exactly the same parameters again (a second
optimiser on the same net) shares the first parameter buffer, as two per-tensor
optimisers would share the arrays; flattening a different set that overlaps moves
them again, and an optimiser of the old FlatParams then refuses to step
(:meth:`FlatParams.check_bound`) instead of silently updating arrays nobody reads.
"""

from __future__ import annotations

import math
import weakref

from minidni.backend import get_xp
from minidni.layers.base import Layer
from minidni.layers.container import Sequential

__all__ = ["ALIGN", "FlatArrays", "FlatParams", "param_slots"]

ALIGN = 64  # elements: every tensor starts at a multiple of this offset in its buffer


_OWNERS: dict = {}  # id(parameter buffer) -> weak references to the FlatParams that hold it


def _register(flat: "FlatParams") -> None:
    for buffer in flat.params.buffers:
        refs = _OWNERS.setdefault(id(buffer), [])
        refs.append(weakref.ref(flat, refs.remove))  # a FlatParams that goes away drops out


def _root(array):
    """The array that owns ``array``'s memory (the end of its ``.base`` chain)."""
    while getattr(array, "base", None) is not None:
        array = array.base
    return array


def _owner(array):
    """A live FlatParams whose parameter buffer ``array`` is a view of, or None."""
    base = _root(array)
    for ref in _OWNERS.get(id(base), []):
        flat = ref()
        if flat is not None and any(b is base for b in flat.params.buffers):
            return flat
    return None


class FlatArrays(dict):
    """A ``dict`` of named views into ``buffers`` (one contiguous 1-D array per dtype group)."""

    def __init__(self, views: dict, buffers: list):
        super().__init__(views)
        self.buffers = buffers


def _join(prefix: str, name) -> str:
    return f"{prefix}.{name}" if prefix else str(name)


def param_slots(layers: dict[str, Layer]) -> list[tuple[str, dict, str]]:
    """``(key, owner, name)`` for every parameter: ``owner[name]`` is the array, ``key`` its flat name.

    ``layers`` maps a prefix to a layer; a Sequential is expanded into its
    sub-layers (``owner`` must be a real dict the layer reads from, which a
    Sequential's derived ``params`` is not).
    """
    slots = []
    for prefix, layer in layers.items():
        if isinstance(layer, Sequential):
            slots += param_slots({_join(prefix, i): sub for i, sub in enumerate(layer.layers)})
        else:
            slots += [(_join(prefix, name), layer.params, name) for name in layer.params]
    return slots


class FlatParams:
    """The parameters of ``layers`` (``{prefix: layer}``) moved into flat buffers; see the module docstring.

    ``keys``: flatten only these keys (default all), e.g. a module's trainable
    subset; the other parameters stay as they are. Attributes: ``params`` and
    ``grads`` (:class:`FlatArrays` with the same keys, shapes and layout; grads
    start at zero), ``scratch`` (one work buffer per group, for the norm).
    """

    def __init__(self, layers: dict[str, Layer], keys=None):
        slots = param_slots(layers)
        if keys is not None:
            wanted = set(keys)
            unknown = wanted - {key for key, _, _ in slots}
            if unknown:
                raise ValueError(f"keys {sorted(unknown)} are not parameters of the layers")
            slots = [s for s in slots if s[0] in wanted]
        if not slots:
            raise ValueError("FlatParams needs at least one parameter")
        self.xp = xp = get_xp(*(owner[name] for _, owner, name in slots))
        self.dtypes = list(dict.fromkeys(owner[name].dtype for _, owner, name in slots))  # groups, in order
        self.layout = {}  # key -> (group, offset, shape)
        sizes = [0] * len(self.dtypes)
        for key, owner, name in slots:
            p = owner[name]
            g = self.dtypes.index(p.dtype)
            self.layout[key] = (g, sizes[g], tuple(p.shape))
            sizes[g] += -(-int(p.size) // ALIGN) * ALIGN
        self.sizes = sizes
        arrays = [owner[name] for _, owner, name in slots]
        other = _owner(arrays[0])
        if other is not None and [id(a) for a in arrays] == [id(a) for a in other.params.values()]:
            # exactly the params of another FlatParams (a second optimiser on the same net): share its buffers,
            # as two per-tensor optimisers would share the arrays
            self.layout = {key: other.layout[k] for key, k in zip(self.layout, other.layout)}
            self.params = FlatArrays(dict(zip(self.layout, arrays)), other.params.buffers)
        else:  # move the params into new buffers (a FlatParams that held some of them is detached: check_bound)
            self.params = self.zeros()
            for (key, owner, name), value in zip(slots, arrays):
                view = self.params[key]
                view[...] = value
                owner[name] = view  # the layer now reads and writes the flat buffer
        _register(self)
        self._slots = [(owner, name, self.params[key]) for key, owner, name in slots]
        self.grads = self.zeros()
        self.scratch = [xp.empty_like(b) for b in self.grads.buffers]

    def check_bound(self) -> None:
        """Raise RuntimeError if a layer no longer reads these buffers (its params were moved into another FlatParams).

        A layer's array may be another view of the same buffer (e.g. an ndarray subclass
        view a test logs through); it must live in this FlatParams' buffer.
        """
        for owner, name, view in self._slots:
            current = owner.get(name)
            if current is not view and _root(current) is not view.base:  # another view of our buffer is fine
                raise RuntimeError(f"parameter {name!r} was moved into another FlatParams (a second trainer or "
                                   "optimiser built on the same layers); this one no longer updates what the "
                                   "layers read: use the newest one")

    def zeros(self) -> FlatArrays:
        """New zero buffers with this layout (e.g. an optimiser's moments), as named views."""
        buffers = [self.xp.zeros(n, dtype=dt) for n, dt in zip(self.sizes, self.dtypes)]
        views = {}
        for key, (g, offset, shape) in self.layout.items():
            views[key] = buffers[g][offset:offset + math.prod(shape)].reshape(shape)
        return FlatArrays(views, buffers)

    def gather(self, grads: dict) -> None:
        """Copy ``grads`` (any subset of the keys) into :attr:`grads`; entries that already are its views are skipped."""
        own = self.grads
        for k, g in grads.items():
            view = own[k]
            if g is not view:
                view[...] = g

    def grad_norm(self):
        """Global L2 norm of :attr:`grads`, a 0-d array (no host sync): one square and one sum per buffer."""
        xp = self.xp
        total = None
        for g, s in zip(self.grads.buffers, self.scratch):
            xp.multiply(g, g, out=s)
            part = s.sum()
            total = part if total is None else total + part
        return xp.sqrt(total)

    def clip_grads(self, max_norm: float):
        """Scale :attr:`grads` in place by ``min(1, max_norm / norm)``; returns the norm before clipping (0-d).

        The same rule as :func:`minidni.optim.clip_by_global_norm`; the norm is
        summed in another order (whole buffers instead of tensor by tensor), so
        the two agree to float rounding, not bit for bit.
        """
        max_norm = float(max_norm)
        if not (max_norm > 0.0 and math.isfinite(max_norm)):
            raise ValueError(f"max_norm must be a finite number > 0, got {max_norm}")
        norm = self.grad_norm()
        scale = max_norm / self.xp.maximum(norm, max_norm)  # 1 when norm <= max_norm, else max_norm / norm
        for g in self.grads.buffers:
            g *= scale.astype(g.dtype)
        return norm

    def num_params(self) -> int:
        """Number of scalars in the flattened parameters (padding not counted)."""
        return sum(math.prod(shape) for _, _, shape in self.layout.values())
