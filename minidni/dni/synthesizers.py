"""Synthetic-gradient models: small networks that predict a gradient (or an input) and learn by L2 regression.

A synthesizer ``M`` sits on the output ``h`` of a module and predicts the
gradient of the loss at ``h``, ``delta_hat = M(h [, c])``, from local
information only (``c``: the one-hot label, for cDNI). It is used at once, and
trained LATER, when a target gradient ``delta`` arrives, by minimising
``|delta_hat - delta|^2``. The two halves are separate calls, and the cache of
a prediction is returned (never stored), so several predictions can wait for
their targets at once:

    >>> sg = mlp_synthesizer(256, hidden=2, width=1024, rng=rng)
    >>> delta_hat, cache = sg.predict(h, labels)      # h (N, 256) -> delta_hat (N, 256)
    >>> ...                                           # the module updates from delta_hat
    >>> loss = sg.fit(cache, delta)                   # later: regression on the target

Shapes. MLP synthesizer: ``h`` (N, D) -> ``delta_hat`` (N, D); with
conditioning its network sees ``[h, onehot(labels)]`` (N, D + K). Conv
synthesizer: ``h`` (N, C, H, W) -> ``delta_hat`` (N, C, H, W); with
conditioning its network sees ``h`` stacked with K mask channels (N, C + K, H,
W), channel k being all ones where the example's label is k and zeros
elsewhere.

Zero initialisation. The last layer's weights AND bias start at exactly 0, so
the first synthetic gradients are exactly 0 and the first step cannot push the
lower module anywhere (a public library forgot the bias).

Per-example units. Gradients of a batch-mean loss scale like 1/N. The network
inside a :class:`Synthesizer` works in per-example units: it regresses onto
``N * delta`` and its raw output is divided by N before it is returned. With
an exact synthesizer this changes nothing; it keeps the network's outputs and
targets O(1) whatever the batch size, so the optimiser's step size (Adam moves
each weight by about ``lr``) matches the scale of the target rather than
overshooting it by a factor N (the failure described in PAPER.md section 6).
The regression loss reported by :meth:`Synthesizer.fit` is in these units:
``sum((raw - N delta)^2) / (2 N)`` (:func:`minidni.functional.mse`).

Warm-up. ``warmup=K`` marks a synthesizer as not :attr:`~Regressor.ready`
until it has been fitted K times; the trainer (:mod:`minidni.dni.feedforward`)
does not apply an unready synthesizer's output to the module below (see there).

Stale weights. ``fit`` back-propagates through the synthesizer with its
parameters as they are at fit time; in the sequential trainers here nothing
updates a synthesizer between its ``predict`` and its ``fit``.
"""

from __future__ import annotations

import numpy as np

from minidni.backend import get_xp
from minidni.functional.losses import mse, softmax_cross_entropy
from minidni.layers import BatchNorm, Conv2d, Linear, ReLU, Sequential
from minidni.flat import FlatParams
from minidni.optim import FlatAdam, FlatSGD

__all__ = ["Regressor", "Synthesizer", "OracleSynthesizer", "mlp_synthesizer", "conv_synthesizer", "mlp_regressor",
           "param_grads", "SG_HIDDEN_CHOICES", "CONDITIONINGS"]

SG_HIDDEN_CHOICES = (0, 1, 2)
CONDITIONINGS = ("none", "concat", "mask")
OPTIMIZERS = ("adam", "sgd")


def param_grads(net: Sequential, dy, caches) -> dict:
    """``net.backward(dy, caches)[1]`` without the gradient at the net's input, when nobody needs it.

    ``Sequential.backward`` always returns the input gradient; when the first
    layer is a :class:`~minidni.layers.Linear` (N, D) -> (N, M), that is a
    ``dy W^T`` product of ``2 N D M`` FLOPs (a third of the layer's forward and
    backward), wasted on a synthesizer's input or on the image. Other first
    layers run their full backward. The gradients are bit-identical to
    ``Sequential.backward``'s, in the same key order as ``net.params``.
    """
    if not isinstance(net.layers[0], Linear):
        return net.backward(dy, caches)[1]
    if len(caches) != len(net.layers):
        raise ValueError(f"got {len(caches)} caches for {len(net.layers)} layers")
    grads = {}
    for i in reversed(range(1, len(net.layers))):
        dy, layer_grads = net.layers[i].backward(dy, caches[i])
        grads.update({f"{i}.{k}": g for k, g in layer_grads.items()})
    grads.update({f"0.{k}": g for k, g in net.layers[0].param_grads(dy, caches[0]).items()})
    return {k: grads[k] for k in net.params}


def one_hot(labels, num_classes: int, dtype):
    """labels (N,) int -> (N, num_classes) of ``dtype``, on the labels' backend."""
    xp = get_xp(labels)
    return xp.eye(num_classes, dtype=dtype)[labels]


class Regressor:
    """A network trained by L2 regression with its own optimiser: ``predict`` now, ``fit`` later.

    ``net`` maps the (conditioned) input to the prediction. ``conditioning``:
    ``"none"``; ``"concat"`` appends ``onehot(labels)`` (N, K) to (N, D) inputs;
    ``"mask"`` stacks K one-hot mask channels onto (N, C, H, W) inputs.
    ``optimizer`` is ``"adam"`` or ``"sgd"`` with learning rate ``lr``.
    """

    def __init__(self, net: Sequential, *, lr: float, optimizer: str = "adam", conditioning: str = "none",
                 num_classes: int = 10, warmup: int = 0):
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning must be one of {', '.join(CONDITIONINGS)}, got {conditioning!r}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
        if isinstance(warmup, bool) or not isinstance(warmup, (int, np.integer)) or warmup < 0:
            raise ValueError(f"warmup must be an integer >= 0 (fits before the output is used), got {warmup!r}")
        self.net = net
        self.conditioning = conditioning
        self.num_classes = int(num_classes)
        self.warmup = int(warmup)
        self.fits = 0
        flat = FlatParams({"": net})  # the params in one flat buffer, updated by a fused step
        self.optimizer = FlatAdam(flat, lr=lr) if optimizer == "adam" else FlatSGD(flat, lr=lr)

    @property
    def ready(self) -> bool:
        """True once the model has been fitted ``warmup`` times (its output may then be used)."""
        return self.fits >= self.warmup

    @property
    def conditioned(self) -> bool:
        return self.conditioning != "none"

    def condition(self, h, labels):
        """The network's input: ``h`` alone, or ``h`` with the label appended (see the class docstring)."""
        if not self.conditioned:
            return h
        if labels is None:
            raise ValueError("this synthesizer is conditioned on the label (cDNI): pass labels (N,) to predict")
        xp = get_xp(h, labels)
        code = one_hot(labels, self.num_classes, h.dtype)  # (N, K)
        if self.conditioning == "concat":
            return xp.concatenate([h, code], axis=1)  # (N, D + K)
        masks = xp.broadcast_to(code[:, :, None, None], (h.shape[0], self.num_classes, *h.shape[2:]))
        return xp.concatenate([h, masks], axis=1)  # (N, C + K, H, W)

    def predict(self, h, labels=None, *, train: bool = True):
        """Return ``(prediction, cache)``; the cache is what :meth:`fit` needs later."""
        out, net_cache = self.net.forward(self.condition(h, labels), train=train)
        return out, (net_cache, out)

    def regression_grads(self, cache, target):
        """``(loss, grads)`` of ``mse(prediction, target)`` w.r.t. the network's params (no update)."""
        net_cache, out = cache
        loss, dout = mse(out, target)
        return loss, param_grads(self.net, dout, net_cache)  # only the params learn: no input gradient

    def fit(self, cache, target):
        """One optimiser step on ``|prediction - target|^2``; returns the loss (a 0-d array, no host sync)."""
        loss, grads = self.regression_grads(cache, target)
        self.optimizer.step(grads)
        self.fits += 1
        return loss

    @property
    def lr(self) -> float:
        return self.optimizer.lr

    @lr.setter
    def lr(self, value: float) -> None:
        self.optimizer.lr = value


class Synthesizer(Regressor):
    """A synthetic-gradient model: a :class:`Regressor` in per-example units (see the module docstring).

    ``predict(h, labels)`` returns ``delta_hat`` shaped like ``h`` in the units of
    the batch-mean loss's gradient; ``fit(cache, delta)`` takes ``delta`` in the
    same units.
    """

    def predict(self, h, labels=None, *, train: bool = True):
        raw, cache = super().predict(h, labels, train=train)
        return raw * (1.0 / h.shape[0]), cache  # per-example gradient -> gradient of the batch mean

    def regression_grads(self, cache, target):
        return super().regression_grads(cache, target * target.shape[0])  # batch-mean units -> per-example


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")


def _zero_last(net: Sequential) -> Sequential:
    """Set every parameter of the last layer (weights and bias) to exactly 0, in place."""
    for p in net.layers[-1].params.values():
        p[...] = 0
    return net


def _mlp(in_dim: int, out_dim: int, *, hidden: int, width: int, batchnorm: bool, rng, dtype) -> Sequential:
    """(Linear [-> BN] -> ReLU) x hidden, then Linear(out_dim)."""
    _check_choice("hidden", hidden, SG_HIDDEN_CHOICES)
    layers, dim = [], in_dim
    for _ in range(hidden):
        layers.append(Linear(dim, width, rng=rng, dtype=dtype))
        layers += [BatchNorm(width, dtype=dtype)] if batchnorm else []
        layers.append(ReLU())
        dim = width
    layers.append(Linear(dim, out_dim, rng=rng, dtype=dtype))
    return Sequential(layers)


def mlp_synthesizer(dim: int, *, hidden: int = 2, width: int = 1024, batchnorm: bool = True,
                    conditioned: bool = False, num_classes: int = 10, lr: float = 1e-4,
                    optimizer: str = "adam", warmup: int = 0, rng: np.random.Generator,
                    dtype=np.float32) -> Synthesizer:
    """SG for (N, dim) activations: ``hidden`` in {0, 1, 2} (0 = linear) layers of ``width`` units.

    Hidden layers are Linear -> BN (if ``batchnorm``) -> ReLU; the last Linear
    maps to ``dim`` and starts at zero. ``conditioned`` appends the one-hot label
    (the network's input is then ``dim + num_classes`` wide).
    """
    in_dim = dim + (num_classes if conditioned else 0)
    net = _zero_last(_mlp(in_dim, dim, hidden=hidden, width=width, batchnorm=batchnorm, rng=rng, dtype=dtype))
    return Synthesizer(net, lr=lr, optimizer=optimizer, conditioning="concat" if conditioned else "none",
                       num_classes=num_classes, warmup=warmup)


def conv_synthesizer(channels: int, *, hidden: int = 2, width: int = 128, kernel_size: int = 5,
                     batchnorm: bool = True, conditioned: bool = False, num_classes: int = 10, lr: float = 1e-4,
                     optimizer: str = "adam", warmup: int = 0, rng: np.random.Generator,
                     dtype=np.float32) -> Synthesizer:
    """SG for (N, channels, H, W) maps: ``hidden`` conv layers of ``width`` filters, then a conv to ``channels``.

    Every conv is ``kernel_size`` x ``kernel_size`` (odd) with same padding, so
    H and W never change; hidden convs are followed by BN (if ``batchnorm``) and
    ReLU; the last conv starts at zero. ``conditioned`` adds ``num_classes``
    one-hot mask channels to the input.
    """
    _check_choice("hidden", hidden, SG_HIDDEN_CHOICES)
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and >= 1 (for same padding), got {kernel_size}")
    pad = kernel_size // 2
    layers, ch = [], channels + (num_classes if conditioned else 0)
    for _ in range(hidden):
        layers.append(Conv2d(ch, width, kernel_size, pad=pad, rng=rng, dtype=dtype))
        layers += [BatchNorm(width, dtype=dtype)] if batchnorm else []
        layers.append(ReLU())
        ch = width
    layers.append(Conv2d(ch, channels, kernel_size, pad=pad, rng=rng, dtype=dtype))
    return Synthesizer(_zero_last(Sequential(layers)), lr=lr, optimizer=optimizer,
                       conditioning="mask" if conditioned else "none", num_classes=num_classes, warmup=warmup)


def mlp_regressor(in_dim: int, out_dim: int, *, hidden: int = 1, width: int = 256, batchnorm: bool = True,
                  lr: float = 1e-4, optimizer: str = "adam", warmup: int = 0, rng: np.random.Generator,
                  dtype=np.float32) -> Regressor:
    """A plain L2 regressor (N, in_dim) -> (N, out_dim) with He-initialised layers (no zero init).

    Used as a synthetic-INPUT model for the complete unlock: it predicts a
    module's input activations from the image.
    """
    net = _mlp(in_dim, out_dim, hidden=hidden, width=width, batchnorm=batchnorm, rng=rng, dtype=dtype)
    return Regressor(net, lr=lr, optimizer=optimizer, warmup=warmup)


class OracleSynthesizer:
    """A stand-in synthesizer that returns the TRUE gradient (for checks and teaching, never for training).

    ``OracleSynthesizer(upper)`` with ``upper`` the modules above (objects with
    ``forward(h) -> (y, cache)`` and ``backward(dy, cache) -> (dx, grads)``):
    ``predict(h, labels)`` runs them as they are now, then the softmax
    cross-entropy on ``labels`` (N,), and backpropagates: ``(dL/dh, None)``,
    shaped like ``h``. With it a DNI step must equal a backprop step. A real
    synthesizer cannot do this: it would wait for everything above (the lock
    DNI removes). ``fit`` learns nothing and returns a 0-d zero.
    """

    ready = True

    def __init__(self, upper):
        self.upper = list(upper)

    def predict(self, h, labels=None, *, train: bool = True):
        caches = []
        for module in self.upper:
            h, cache = module.forward(h)
            caches.append(cache)
        _, d = softmax_cross_entropy(h, labels)
        for module, cache in zip(self.upper[::-1], caches[::-1]):
            d, _ = module.backward(d, cache)
        return d, None

    def fit(self, cache, target):
        return get_xp(target).zeros((), target.dtype)
