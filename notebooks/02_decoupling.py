# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 2. Decoupling: synthetic gradients and how they learn
#
# **Goal.** Notebook 1 showed that under backprop the bottom module cannot update until the
# whole network has run forward and backward. A *decoupled neural interface* (DNI) puts a small
# model, the *synthesizer* (SG), on a module's output and lets it predict the gradient that will
# eventually arrive there. In this notebook we
#
# 1. derive the update a module makes from a synthetic gradient and check it numerically,
# 2. derive the gradient of the synthesizer's own L2 regression loss and check it numerically,
# 3. see why the synthesizer's last layer starts at zero (weights *and* bias),
# 4. compare one DNI, every-layer DNI and cDNI (label-conditioned) with backprop on MNIST,
#    watching how well the synthetic gradients point in the true gradient's direction, and
# 5. update modules *asynchronously*, each with probability $p_\text{update}$ per step,
# 6. write every-layer DNI **from scratch** in about thirty lines of NumPy and check that it moves
#    every parameter exactly as the package's trainer does, and
# 7. do two graded exercises (TODO stubs; the cell after each grades it against the package).
#
# `MINIDNI_FAST=1` shrinks sizes and steps (same code), as in the test suite;
# `MINIDNI_FIGURE_DIR=folder` saves the figures; `MINIDNI_SOLUTIONS=1` grades the reference solution
# where an exercise is still a TODO. The normal mode takes a few minutes on a laptop CPU.
#
# Arrays that live on the compute device (a GPU under `MINIDNI_BACKEND=cupy`) are the package's
# parameters and what we hand them: host arrays go in through `to_device` and come back for
# printing and comparisons through `to_numpy`.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FormatStrFormatter, NullFormatter

import minidni.functional as F
from minidni import models
from minidni.backend import to_device, to_numpy
from minidni.data import mnist_or_standin
from minidni.dni import FeedForwardTrainer, Module, OracleSynthesizer, build_trainer, mlp_synthesizer
from minidni.dni.feedforward import error_percent, raise_if_diverged
from minidni.gradcheck import adjoint_check, elementwise_check
from minidni.layers import Linear, ReLU, Sequential
from minidni.notebook import Notebook

nb = Notebook("02")  # reads MINIDNI_FAST, MINIDNI_FIGURE_DIR, MINIDNI_SOLUTIONS, MINIDNI_DATA
FAST = nb.fast


def plain_log_axis(axis):
    """Label a log-scaled axis with plain numbers (2, 5, 10) instead of powers of ten."""
    axis.set_major_formatter(FormatStrFormatter("%g"))
    axis.set_minor_formatter(FormatStrFormatter("%g"))


# %% [markdown]
# ## 1. Notation and shapes
#
# A network is a stack of modules $h_i = f_i(h_{i-1}; \theta_i)$, $i = 1, \dots, n$, with
# $h_0 = x \in \mathbb{R}^{N \times 784}$ (a minibatch of $N$ images) and the top module ending
# in the logits that meet the loss $L$ (mean softmax cross-entropy over the batch). Every hidden
# module is Linear → BatchNorm → ReLU, so $h_i \in \mathbb{R}^{N\times H}$.
#
# The true gradient at a module's output is $\delta_i = \partial L/\partial h_i$ ($N\times H$).
# The synthesizer $S_i$ on $h_i$ predicts it: $\hat\delta_i = S_i(h_i)$, or
# $\hat\delta_i = S_i(h_i, y)$ for cDNI, where it also sees the one-hot labels
# $Y \in \{0,1\}^{N\times K}$. (The paper calls the model on $h_i$ $M_{i+1}$, after the module
# whose gradient it replaces; the package numbers it after the module it sits on.)
#
# | paper | meaning | in the package | shape, units |
# |---|---|---|---|
# | $f_i$, $\theta_i$ | module $i$ and its parameters | `trainer.modules[i-1]`, `.net.params` | |
# | $\delta_i = \partial L/\partial h_i$ | true gradient at $h_i$ | `trainer.true_gradients(x, y)` (diagnostics only) | $N\times H$, nats per unit of $h_i$, $O(1/N)$ per row |
# | $M_{i+1}$ | SG model on $h_i$ | `trainer.synthesizers[i-1]` (`S_i`) | |
# | $\hat\delta_i = M_{i+1}(h_i[, y])$ | synthetic gradient | `sg.predict(h, y)[0]` | like $\delta_i$ |
# | $r = N\hat\delta_i$, $t = N\delta_i$ | SG output and target in per-example units | inside `Synthesizer` | $O(1)$ per row |
# | $\lVert\hat\delta - \delta\rVert^2$ | SG regression loss | `sg.fit(cache, target)` returns $\frac{1}{2N}\lVert r - t\rVert^2$ | nats² per unit² |
# | $p_\text{update}$ | probability that a module updates in a step | `p_update=` | |
#
# **The picture.** Every-layer DNI on three modules: each SG predicts the gradient at its
# module's output (purple) and the module updates at once; the SG's regression target (grey) is
# the module above's backward of *its* SG's prediction (bootstrapped), except for the top SG,
# whose target is the true loss gradient pushed through the top module.

# %%
def draw_every_layer_dni(ax):
    from matplotlib.patches import FancyBboxPatch

    arrow = dict(arrowstyle="-|>", lw=1.6)
    for k in range(3):
        x0 = 2.4 * k
        ax.add_patch(FancyBboxPatch((x0, 0.0), 1.6, 0.9, boxstyle="round,pad=0.05", fc="#dbe9f6", ec="tab:blue"))
        ax.text(x0 + 0.8, 0.45, f"module {k + 1}\n$f_{k + 1}$", ha="center", va="center", fontsize=9)
        ax.annotate("", (x0 - 0.05, 0.45), (x0 - 0.75, 0.45), arrowprops=dict(arrow, color="tab:blue"))
        ax.text(x0 - 0.4, 0.6, f"$h_{k}$", ha="center", fontsize=9, color="tab:blue")
        if k < 2:
            ax.add_patch(FancyBboxPatch((x0 + 1.0, 1.7), 1.4, 0.6, boxstyle="round,pad=0.05", fc="#e8dcf2", ec="tab:purple"))
            ax.text(x0 + 1.7, 2.0, f"$M_{k + 2}$ = SG {k + 1}", ha="center", va="center", fontsize=9)
            ax.annotate("", (x0 + 1.6, 1.65), (x0 + 1.8, 0.95), arrowprops=dict(arrow, color="tab:blue"))
            ax.annotate("", (x0 + 1.2, 0.95), (x0 + 1.3, 1.65), arrowprops=dict(arrow, color="tab:purple"))
            ax.text(x0 + 0.2, 1.25, rf"$\hat\delta_{k + 1}$", color="tab:purple", fontsize=10)
            src = "true $\\partial L/\\partial h_3$\nthrough module 3" if k == 1 else \
                rf"$\hat\delta_{k + 2}$ through module {k + 2}"
            ax.annotate("", (x0 + 2.2, 1.65), (x0 + 3.0, 0.95),
                        arrowprops=dict(arrow, color="gray", ls="--", connectionstyle="arc3,rad=0.3"))
            ax.text(x0 + 2.5, 2.55, f"target of SG {k + 1}:\n" + src, color="gray", fontsize=8, ha="center")
    ax.add_patch(FancyBboxPatch((7.2, 0.1), 1.2, 0.7, boxstyle="round,pad=0.05", fc="#fde0c5", ec="tab:orange"))
    ax.text(7.8, 0.45, "loss $L$", ha="center", va="center", fontsize=9)
    ax.annotate("", (7.15, 0.45), (6.45, 0.45), arrowprops=dict(arrow, color="tab:blue"))
    ax.annotate("", (5.6, -0.1), (7.4, -0.1), arrowprops=dict(arrow, color="tab:orange", connectionstyle="arc3,rad=-0.3"))
    ax.text(6.6, -0.75, r"true $\partial L/\partial h_3$", color="tab:orange", fontsize=9, ha="center")
    ax.set(xlim=(-0.9, 8.6), ylim=(-1.0, 3.3))
    ax.axis("off")


fig, ax = plt.subplots(figsize=(10, 3.6), constrained_layout=True)
draw_every_layer_dni(ax)
ax.set_title("Every-layer DNI: purple = synthetic gradients used at once, grey = where each SG's target comes from")
nb.show(fig, "schematic")
#
# ## 2. The update from a synthetic gradient
#
# Backprop changes module $i$'s parameters by
#
# $$\theta_i \leftarrow \theta_i - \alpha \Big(\frac{\partial h_i}{\partial \theta_i}\Big)^{\!\top} \delta_i
#   = \theta_i - \alpha\, \nabla_{\theta}\, \big\langle \delta_i,\ f_i(h_{i-1}; \theta) \big\rangle\Big|_{\theta=\theta_i},$$
#
# a vector-Jacobian product: the gradient of the scalar $\langle \delta_i, h_i\rangle = \sum_{n,j}
# (\delta_i)_{nj} (h_i)_{nj}$ with $\delta_i$ held fixed. DNI makes the same update with
# $\hat\delta_i$ in place of $\delta_i$, **as soon as $h_i$ exists**:
#
# $$\theta_i \leftarrow \theta_i - \alpha\, \nabla_{\theta}\, \big\langle \hat\delta_i,\ f_i(h_{i-1}; \theta) \big\rangle .$$
#
# So the module descends the surrogate loss $\langle\hat\delta_i, h_i\rangle$, which is backprop's
# step exactly when $\hat\delta_i = \delta_i$. The same product also gives
# $(\partial h_i/\partial h_{i-1})^\top \hat\delta_i$, the gradient at the module's *input*; in
# every-layer DNI it becomes the regression target of the synthesizer below (section 4).
#
# In the package the product is one call, `module.backward(delta_hat, cache) -> (d_input, grads)`.
# **Check:** its outputs equal finite differences of $\langle \hat\delta, f(h_{i-1}; \theta)\rangle$
# for every parameter and for the input (adjoint test, float64; the identity holds for any
# $\hat\delta$, so we draw a random one).

# %%
rng = np.random.default_rng(0)
N, D_IN, H = 8, 6, 5
net = models.fcn(2, in_dim=D_IN, width=H, rng=np.random.default_rng(3), dtype=np.float64)[0]  # Linear -> BN -> ReLU
keys = list(net.params)
h_prev = rng.standard_normal((N, D_IN))
delta_hat = rng.standard_normal((N, H))


def f(h_in, *values):
    """The module's output (host array) with its parameters set to `values` (the originals are restored)."""
    saved = [net.params[k].copy() for k in keys]
    for k, v in zip(keys, values):
        net.params[k][...] = to_device(v)  # device parameters are set through device arrays
    out = net.forward(to_device(h_in))[0]
    for k, v in zip(keys, saved):
        net.params[k][...] = v
    return to_numpy(out)


h_i, cache = net.forward(to_device(h_prev))
d_input, grads = to_numpy(net.backward(to_device(delta_hat), cache))
errors = adjoint_check(f, [h_prev] + [to_numpy(net.params[k]) for k in keys], [d_input] + [grads[k] for k in keys],
                       delta_hat, names=["h_{i-1}"] + keys)
for name, err in errors.items():
    print(f"{name:>8}: relative error of the vector-Jacobian product vs finite differences = {err:.1e}")
print(f"largest |gradient| of the Linear bias 0.b: {np.abs(grads['0.b']).max():.1e}")
assert np.abs(grads["0.b"]).max() < 1e-12
assert max(err for name, err in errors.items() if name != "0.b") < 1e-6

# %% [markdown]
# `adjoint_check` raises if any input disagrees, so all passed. The one large *relative* error,
# for the Linear layer's bias `0.b`, compares two numbers that are both zero up to rounding: the
# BatchNorm right after it subtracts the batch mean, so adding a constant to every pre-activation
# changes nothing, and that bias gets a gradient of exactly 0 (the check then passes on its
# absolute tolerance).

# %% [markdown]
# **Check:** with a synthesizer that returns the *true* gradient (an "oracle": it runs the
# modules above and the loss, which a real SG cannot do), one DNI step of the package's trainer
# must move every parameter exactly as one backprop step does. The package's `OracleSynthesizer`
# is that stand-in: it backpropagates through the modules above, as they are now.

# %%
def small_modules():
    nets = models.fcn(3, in_dim=D_IN, width=H, num_classes=4, rng=np.random.default_rng(4), dtype=np.float64)
    return [Module(n, lr=0.1, optimizer="sgd") for n in nets]


x_small, y_small = to_device((rng.standard_normal((N, D_IN)), rng.integers(0, 4, N)))
reference = FeedForwardTrainer(small_modules(), method="bprop")
mods = small_modules()
oracle_dni = FeedForwardTrainer(mods, method="dni", synthesizers=[OracleSynthesizer(mods[i + 1:]) for i in range(2)])
reference.step(x_small, y_small)
oracle_dni.step(x_small, y_small)
gap = max(float(np.abs(to_numpy(a.net.params[k] - b.net.params[k])).max())
          for a, b in zip(reference.modules, oracle_dni.modules) for k in a.net.params)
print(f"largest difference between the parameters after one backprop step and one oracle-DNI step: {gap:.1e}")
assert gap < 1e-12

# %% [markdown]
# ## 3. Training the synthesizer: L2 regression
#
# The synthesizer learns by regression: once a target $\delta$ for a prediction $\hat\delta$
# arrives, it takes a step on $\lVert\hat\delta - \delta\rVert^2$. One detail of scale matters.
# The loss is a *mean* over the batch, so every row of $\delta$ is $1/N$ times a per-example
# gradient. The package's `Synthesizer` therefore lets its network work in per-example units:
# its raw output $r$ is divided by $N$,
#
# $$\hat\delta = r / N, \qquad \text{target } t = N\delta, \qquad
#   \ell = \frac{1}{2N}\sum_{n,j} (r_{nj} - t_{nj})^2 = \frac{N}{2} \lVert \hat\delta - \delta \rVert^2 ,$$
#
# so the network's outputs and targets stay $O(1)$ whatever the batch size.
#
# **Derivation for a linear SG** (cDNI's, `hidden=0`): $r = u A + c$ with $u = h$ ($N\times H$),
# or for cDNI $u = [h,\ Y]$ ($N\times(H+K)$), $A$ of shape $(\dim u)\times H$ and $c\in\mathbb{R}^H$.
# With $E = r - t$,
#
# $$\frac{\partial \ell}{\partial r} = \frac{E}{N},\qquad
#   \frac{\partial \ell}{\partial A} = \frac{u^\top E}{N} \;\;(\dim u \times H),\qquad
#   \frac{\partial \ell}{\partial c} = \frac{1}{N}\sum_n E_{n,:} \;\;(H).$$
#
# For cDNI the lower block of $A$ multiplies the one-hot labels: it is a learned per-class offset
# of the predicted gradient. Only the SG's parameters learn from $\ell$; nothing flows into $h$.
#
# **Check:** the formulas above equal the package's `regression_grads` and finite differences of
# the package's own loss, for DNI and cDNI (float64, random $A$ and $c$).

# %%
N, H, K = 8, 5, 10
h = rng.standard_normal((N, H))
labels = rng.integers(0, K, N)
delta = rng.standard_normal((N, H)) / N  # a batch-mean gradient: O(1/N) per row

for conditioned in (False, True):
    sg = mlp_synthesizer(H, hidden=0, conditioned=conditioned, num_classes=K, rng=rng, dtype=np.float64)
    A_host, c_host = rng.standard_normal(sg.net.params["0.W"].shape), rng.standard_normal(H)  # away from zero
    sg.net.params["0.W"][...], sg.net.params["0.b"][...] = to_device(A_host), to_device(c_host)
    u = np.concatenate([h, np.eye(K)[labels]], axis=1) if conditioned else h
    r, t = u @ A_host + c_host, N * delta

    prediction, cache = sg.predict(*to_device((h, labels)))
    loss, grads = to_numpy(sg.regression_grads(cache, to_device(delta)))
    assert np.allclose(to_numpy(prediction), r / N, rtol=1e-12, atol=0)
    assert np.allclose(loss, ((r - t) ** 2).sum() / (2 * N), rtol=1e-12, atol=0)
    E = r - t
    by_hand = {"0.W": u.T @ E / N, "0.b": E.sum(0) / N}
    for k in by_hand:
        assert np.allclose(grads[k], by_hand[k], rtol=1e-12, atol=1e-15), k

    def loss_at(A_, c_):
        sg.net.params["0.W"][...], sg.net.params["0.b"][...] = to_device(A_), to_device(c_)
        value = sg.regression_grads(sg.predict(*to_device((h, labels)))[1], to_device(delta))[0]
        sg.net.params["0.W"][...], sg.net.params["0.b"][...] = to_device(A_host), to_device(c_host)
        return float(to_numpy(value))

    errors = elementwise_check(loss_at, [A_host.copy(), c_host.copy()], [by_hand["0.W"], by_hand["0.b"]], None,
                               names=["A", "c"])
    print(f"{'cDNI' if conditioned else 'DNI '} linear SG: u is {u.shape}, A is {A_host.shape}; largest relative error "
          f"vs finite differences: A {errors['A']:.1e}, c {errors['c']:.1e}")
    assert max(errors.values()) < 1e-5

# %% [markdown]
# **Exercise 1 (the SG's regression gradient).** Write the gradient of
# $\ell = \frac{1}{2N}\lVert uA + c - t\rVert^2$ with respect to $A$ and $c$ yourself (the derivation
# above, in two lines of NumPy). The check runs the package's `regression_grads` on the same numbers.

# %%
def linear_sg_grads(u, A, c, target):
    """(dl/dA, dl/dc) of l = |u A + c - target|^2 / (2N): u (N, I), A (I, H), c (H,), target (N, H) per example."""
    # TODO (exercise 1)
    raise NotImplementedError


def package_linear_sg_grads(u, A, c, target):
    """The package's gradients for the same numbers: a linear unconditioned Synthesizer on u."""
    sg_ = mlp_synthesizer(u.shape[1], hidden=0, rng=np.random.default_rng(0), dtype=np.float64)
    sg_.net.params["0.W"][...], sg_.net.params["0.b"][...] = to_device(A), to_device(c)
    grads_ = sg_.regression_grads(sg_.predict(to_device(u))[1], to_device(target / u.shape[0]))[1]
    return to_numpy(grads_["0.W"]), to_numpy(grads_["0.b"])


cases = [(rng.standard_normal((6, 5)), rng.standard_normal((5, 5)), rng.standard_normal(5), rng.standard_normal((6, 5)))
         for _ in range(3)]
nb.grade("02.linear SG gradient", linear_sg_grads, against=package_linear_sg_grads, cases=cases)

# %% [markdown]
# With hidden layers (DNI's SG in the paper: two hidden layers with BatchNorm and ReLU), the
# same $\partial\ell/\partial r = E/N$ is backpropagated through the SG's own little network; the
# package's tests check those gradients the same way.
#
# ## 4. Zero initialisation: the first synthetic gradient is exactly 0
#
# Before it has seen a single target, a synthesizer knows nothing, and a random prediction would
# push the module below in a random direction. So the **last layer of every SG starts with
# weights and bias exactly 0**: the first predictions are exactly 0 and the first updates of the
# lower modules are empty. The paper does this; a public implementation zeroed only the weights.

# %%
sg = mlp_synthesizer(H, hidden=2, width=16, rng=np.random.default_rng(5), dtype=np.float64)
last = to_numpy(sg.net.layers[-1].params)
print("last layer:", {k: (v.shape, float(np.abs(v).max())) for k, v in last.items()})
first, cache = sg.predict(to_device(h))
first = to_numpy(first)
assert np.all(first == 0.0)
sg.fit(cache, to_device(delta))
second = to_numpy(sg.predict(to_device(h))[0])
print(f"first prediction: max |delta_hat| = {np.abs(first).max()}; after one fit: {np.abs(second).max():.2e}")
assert np.abs(second).max() > 0

# %% [markdown]
# In a real DNI step the zero prediction means the modules under a synthesizer do not move at all
# on the first step, while the top module (which sees the true loss gradient) does. And if we
# re-create the public library's bug, a bias that is not zero, the bottom module moves at once in
# a direction that has nothing to do with the loss:

# %%
def first_step_moves(bias_bug):
    nets = models.fcn(3, in_dim=D_IN, width=H, rng=np.random.default_rng(6), dtype=np.float64)
    trainer = build_trainer(nets, method="dni", in_shape=(D_IN,), lr=1e-3, sg_width=16,
                            rng=np.random.default_rng(7), dtype=np.float64)
    if bias_bug:
        for s in trainer.synthesizers:
            b = s.net.layers[-1].params["b"]
            b[...] = to_device(0.1 * np.random.default_rng(8).standard_normal(b.shape))
    before = [{k: np.array(to_numpy(v)) for k, v in m.net.params.items()} for m in trainer.modules]  # copies
    trainer.step(*to_device((rng.standard_normal((N, D_IN)), rng.integers(0, 10, N))))
    return [max(float(np.abs(to_numpy(m.net.params[k]) - b[k]).max()) for k in b) for m, b in zip(trainer.modules, before)]


for bug in (False, True):
    moves = first_step_moves(bug)
    print(f"{'bias NOT zeroed' if bug else 'zero init (weights and bias)':>28}: largest parameter change "
          f"in modules 1..3 after the first step = " + ", ".join(f"{m:.1e}" for m in moves))
    if bug:
        assert moves[0] > 0
    else:
        assert moves[0] == 0 and moves[1] == 0 and moves[2] > 0

# %% [markdown]
# ## 5. One DNI, every-layer DNI, cDNI: where the targets come from
#
# With **one DNI** we cut the network in one place: a 4-layer FCN becomes two modules of two layers
# each, and the single SG regresses onto the *true* gradient at the cut, which the upper module
# computes by backprop from the loss.
#
# With **every-layer DNI** every layer is a module and has an SG. Only the top SG sees a true
# gradient; every other $S_{i-1}$ regresses onto the next module's synthetic gradient
# backpropagated through that module,
#
# $$\text{target of } S_{i-1} = \Big(\frac{\partial h_i}{\partial h_{i-1}}\Big)^{\!\top} \hat\delta_i ,$$
#
# the input gradient of section 2 (a *bootstrapped* target: like temporal-difference learning,
# one prediction learns from the next). **cDNI** is every-layer DNI whose SGs are linear and see
# the label too.
#
# **Check:** we record a real every-layer DNI step and confirm that each SG's regression target is
# exactly what the module above returned from its backward, that the module above was fed that
# SG's own prediction, and that the top module was fed the loss gradient. On a first step every
# zero-initialised SG predicts 0 and every target below the top is 0, so a wiring mistake could
# hide; we therefore give every SG random nonzero last-layer weights first, and compare *values*
# recomputed independently, not only which object went where.

# %%
class Tap:
    """Records the arguments and results of a few methods of the trainer's own objects."""

    def __init__(self):
        self.calls = []

    def wrap(self, obj, what, who):
        inner = getattr(obj, what)

        def recorded(*args, **kwargs):
            out = inner(*args, **kwargs)
            self.calls.append((who, what, args, out))
            return out

        setattr(obj, what, recorded)

    def get(self, who, what):
        return next((args, out) for w, m, args, out in self.calls if (w, m) == (who, what))


nets = models.fcn(4, in_dim=D_IN, width=H, rng=np.random.default_rng(9), dtype=np.float64)
trainer = build_trainer(nets, method="dni", in_shape=(D_IN,), lr=1e-3, sg_width=16,
                        rng=np.random.default_rng(10), dtype=np.float64)
for k, sg_k in enumerate(trainer.synthesizers):  # nonzero SGs: every prediction and target is nonzero
    for name, v in sg_k.net.layers[-1].params.items():
        v[...] = to_device(0.5 * np.random.default_rng([11, k]).standard_normal(v.shape))
tap = Tap()
for i, m in enumerate(trainer.modules):
    tap.wrap(m, "forward", i + 1)
    tap.wrap(m, "backward", i + 1)
for i, s in enumerate(trainer.synthesizers):
    tap.wrap(s, "predict", i + 1)
    tap.wrap(s, "fit", i + 1)
x_wire, y_wire = to_device((rng.standard_normal((N, D_IN)), rng.integers(0, 10, N)))
trainer.step(x_wire, y_wire)

logits = tap.get(4, "forward")[1][0]
_, loss_grad = F.softmax_cross_entropy(logits, y_wire)  # recomputed here from the top module's output
fed_top = tap.get(4, "backward")[0][0]
assert np.allclose(to_numpy(fed_top), to_numpy(loss_grad), rtol=1e-12, atol=0) and np.abs(to_numpy(loss_grad)).max() > 0
print(f"module 4 was fed the loss gradient (max |entry| {np.abs(to_numpy(loss_grad)).max():.3f})")
for i in (1, 2, 3):  # S_i sits on module i's output; its target comes from module i + 1
    (fed, cache_up), (d_input, _) = tap.get(i + 1, "backward")
    (_, target), _ = tap.get(i, "fit")
    # values, not identity; section 6 recomputes every one of them from scratch
    assert np.allclose(to_numpy(target), to_numpy(d_input), rtol=1e-12, atol=0) and np.abs(to_numpy(target)).max() > 0
    if i + 1 < 4:  # module i+1 ran backward on S_{i+1}'s own prediction, a nonzero array
        prediction = tap.get(i + 1, "predict")[1][0]
        assert np.allclose(to_numpy(fed), to_numpy(prediction), rtol=1e-12, atol=0), i
    print(f"S_{i}'s target (max |entry| {np.abs(to_numpy(target)).max():.2e}) = module {i + 1}'s input gradient, "
          f"computed from {'the true loss gradient' if i + 1 == 4 else f'S_{i + 1}' + chr(39) + 's prediction'}")

# %% [markdown]
# ## 6. Every-layer DNI from scratch
#
# Here is the whole algorithm in plain NumPy, for a 3-module MLP
# ($h_1 = \mathrm{relu}(xW_1 + b_1)$, $h_2 = \mathrm{relu}(h_1W_2 + b_2)$, logits $h_2W_3 + b_3$),
# linear SGs in per-example units ($\hat\delta_i = (h_iA_i + c_i)/N$) and plain SGD. Read it next
# to the schematic: **forward, predict, update now; fit the SG below** when the module above
# has produced its target.

# %%
def dni_step(P, S, x, y, lr, sg_lr):
    """One every-layer DNI step, in place. P: W1, b1, W2, b2, W3, b3; S: A1, c1, A2, c2 (linear SGs)."""
    n_rows = x.shape[0]
    h, below = x, None                                   # below: (i, h_i, r_i) of the SG waiting for its target
    for i in (1, 2, 3):
        z = h @ P[f"W{i}"] + P[f"b{i}"]
        if i < 3:                                        # hidden module: forward, then its SG predicts
            out = np.maximum(z, 0)
            r = out @ S[f"A{i}"] + S[f"c{i}"]            # per-example prediction, (N, H)
            dz = (r / n_rows) * (z > 0)                  # backward of delta_hat_i = r / N through the ReLU
        else:                                            # top module: the true loss gradient
            p = np.exp(z - z.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            dz = (p - np.eye(z.shape[1])[y]) / n_rows
        d_in = dz @ P[f"W{i}"].T                         # the module's input gradient: the target below
        P[f"W{i}"] -= lr * h.T @ dz                      # UPDATE NOW, before module i+1 runs forward
        P[f"b{i}"] -= lr * dz.sum(0)
        if below is not None:                            # the SG below regresses onto N * d_in
            j, h_j, r_j = below
            E = r_j - n_rows * d_in
            S[f"A{j}"] -= sg_lr * h_j.T @ E / n_rows
            S[f"c{j}"] -= sg_lr * E.sum(0) / n_rows
        below = (i, out, r) if i < 3 else None
        h = out if i < 3 else None


# %% [markdown]
# **Check:** the same network, the same nonzero SG weights and the same minibatches in the package's
# `FeedForwardTrainer` (modules and SGs built from `minidni.layers`, SGD for both), five steps;
# every parameter, of every module and every SG, must agree after each step (float64).

# %%
D_S, H_S, K_S, N_S, LR_S, SG_LR_S = 6, 5, 4, 8, 0.1, 0.05
init = np.random.default_rng(12)
P = {"W1": 0.5 * init.standard_normal((D_S, H_S)), "b1": 0.1 * init.standard_normal(H_S),
     "W2": 0.5 * init.standard_normal((H_S, H_S)), "b2": 0.1 * init.standard_normal(H_S),
     "W3": 0.5 * init.standard_normal((H_S, K_S)), "b3": 0.1 * init.standard_normal(K_S)}
S = {"A1": 0.3 * init.standard_normal((H_S, H_S)), "c1": 0.1 * init.standard_normal(H_S),
     "A2": 0.3 * init.standard_normal((H_S, H_S)), "c2": 0.1 * init.standard_normal(H_S)}


def package_copy(P, S):
    """The package's trainer holding copies of P and S (moved to the device)."""
    def linear(W, b):
        layer = Linear(*W.shape, rng=np.random.default_rng(0), dtype=np.float64)
        layer.params["W"][...], layer.params["b"][...] = to_device(W), to_device(b)
        return layer

    nets = [Sequential([linear(P["W1"], P["b1"]), ReLU()]), Sequential([linear(P["W2"], P["b2"]), ReLU()]),
            Sequential([linear(P["W3"], P["b3"])])]
    sgs = []
    for j in (1, 2):
        sg_j = mlp_synthesizer(H_S, hidden=0, lr=SG_LR_S, optimizer="sgd", rng=np.random.default_rng(0), dtype=np.float64)
        sg_j.net.params["0.W"][...], sg_j.net.params["0.b"][...] = to_device(S[f"A{j}"]), to_device(S[f"c{j}"])
        sgs.append(sg_j)
    return FeedForwardTrainer([Module(net, lr=LR_S, optimizer="sgd") for net in nets], method="dni", synthesizers=sgs)


package = package_copy(P, S)
start_values = {k: v.copy() for k, v in {**P, **S}.items()}
batches = np.random.default_rng(13)
for step in range(1, 6):
    xs_, ys_ = batches.standard_normal((N_S, D_S)), batches.integers(0, K_S, N_S)
    dni_step(P, S, xs_, ys_, LR_S, SG_LR_S)
    package.step(*to_device((xs_, ys_)))
    theirs = {**{f"{w}{i + 1}": to_numpy(m.net.params[f"0.{w}"]) for i, m in enumerate(package.modules) for w in "Wb"},
              **{f"{a}{j + 1}": to_numpy(sg_.net.params[f"0.{k}"]) for j, sg_ in enumerate(package.synthesizers)
                 for a, k in (("A", "W"), ("c", "b"))}}
    gap = max(float(np.abs(theirs[k] - v).max()) for k, v in {**P, **S}.items())
    print(f"step {step}: largest difference over all {len(theirs)} parameter arrays, from scratch vs the package: {gap:.1e}")
    assert gap < 1e-12, gap
changed = min(float(np.abs(v - start_values[k]).max()) for k, v in {**P, **S}.items())
print(f"every parameter array moved during the five steps (smallest largest change: {changed:.1e})")
assert changed > 1e-6

# %% [markdown]
# ## 7. Training on MNIST
#
# Four ways to train the same 4-layer fully connected net (Linear → BN → ReLU per layer, then the
# output layer), all with Adam at lr $10^{-3}$ and the same data order:
#
# | label | modules | synthesizers |
# |---|---|---|
# | backprop | – | – |
# | one DNI | 2 (layers 1–2, layers 3–4) | one SG, two hidden layers, on the cut |
# | every-layer DNI | 4 | three SGs, two hidden layers each |
# | every-layer cDNI | 4 | three *linear* SGs that also see the label |
#
# The paper's DNI synthesizers have 1024 hidden units; here they are as wide as the network, to
# keep the run short on a CPU. Every few steps the trainer's diagnostic pass
# (`step(..., diagnose=True)`) also computes the true gradients $\delta_i$ by backprop, *only to
# measure* the cosine similarity $\cos(\hat\delta_i, \delta_i)$ and the norm ratio
# $\lVert\hat\delta_i\rVert / \lVert\delta_i\rVert$; they are never used to train.
#
# Data: MNIST when the data folder has it (`$MINIDNI_DATA`, else the user cache folder: the
# package's own resolution), otherwise a synthetic stand-in of the same shape; moved to the
# device once, here.

# %%
x_train, y_train, x_test, y_test = to_device(mnist_or_standin(4000 if FAST else 60000, 1000 if FAST else 10000,
                                                              folders=nb.data_folders))

WIDTH, BATCH, LR = (64, 64, 1e-3) if FAST else (128, 128, 1e-3)
STEPS, EVAL_EVERY, LOG_EVERY = (120, 40, 10) if FAST else (1000, 100, 25)
LAYERS = 4
CONFIGS = {  # label: (method, hidden layers per module)
    "backprop": ("bprop", [1, 1, 1, 1]),
    "one DNI": ("dni", [2, 2]),
    "every-layer DNI": ("dni", [1, 1, 1, 1]),
    "every-layer cDNI": ("cdni", [1, 1, 1, 1]),
}


def make_trainer(method, split, p_update=1.0):
    """The 4-layer FCN cut into modules of `split` layers each, trained by `method`."""
    layers = models.fcn(LAYERS, width=WIDTH, rng=np.random.default_rng(0))
    nets, start = [], 0
    for size in split:
        nets.append(Sequential([layer for net in layers[start:start + size] for layer in net.layers]))
        start += size
    return build_trainer(nets, method=method, in_shape=(784,), lr=LR, sg_width=WIDTH, p_update=p_update,
                         rng=np.random.default_rng(1), seed=2)


def train(method, split, p_update=1.0, diagnose=True):
    """Train for STEPS steps; returns the test-error curve, diagnostics and how often each module updated."""
    trainer = make_trainer(method, split, p_update)
    order = np.random.default_rng(3)  # the same minibatches for every run
    run = {"eval": [], "diag_steps": [], "cosine": {}, "ratio": {}, "updates": np.zeros(len(split))}
    start = time.perf_counter()
    for step in range(1, STEPS + 1):
        idx = to_device(order.integers(0, len(x_train), BATCH))
        logged = diagnose and step % LOG_EVERY == 0
        result = trainer.step(x_train[idx], y_train[idx], diagnose=logged).to_host()
        raise_if_diverged(result, step)
        run["updates"] += result["updated"]
        if logged and result["cosine"]:
            run["diag_steps"].append(step)
            for i, v in result["cosine"].items():
                run["cosine"].setdefault(i, []).append(v)
                run["ratio"].setdefault(i, []).append(result["norm_ratio"][i])
        if step % EVAL_EVERY == 0:
            run["eval"].append((step, error_percent(trainer.modules, x_test, y_test)))
    run["seconds"] = time.perf_counter() - start
    return run


runs = {}
for label, (method, split) in CONFIGS.items():
    runs[label] = train(method, split)
    print(f"{label:>17}: test error {runs[label]['eval'][-1][1]:5.2f} % after {STEPS} steps "
          f"({runs[label]['seconds']:.0f} s, {STEPS / runs[label]['seconds']:.0f} steps/s)")

# %%
fig, ax = plt.subplots(figsize=(7.5, 4.2), constrained_layout=True)
for (label, run), marker in zip(runs.items(), "osD^"):
    ax.plot(*zip(*run["eval"]), marker=marker, label=label)
ax.set(xlabel="training step", ylabel="test error (%)", yscale="log",
       title=f"{LAYERS}-layer FCN ({WIDTH} units), batch {BATCH}, Adam lr {LR:g}: test error on {len(x_test)} images")
plain_log_axis(ax.yaxis)
ax.legend()
ax.grid(alpha=0.3, which="both")
nb.show(fig, "methods")

# %% [markdown]
# %%
ranking = sorted(runs, key=lambda label: runs[label]["eval"][-1][1])
print(f"after {STEPS} steps, best to worst test error: " +
      ", ".join(f"{label} {runs[label]['eval'][-1][1]:.2f} %" for label in ranking))

# %% [markdown]
# What to look for (the ranking printed above is this run's; at the fast setting the runs are too
# short to rank). Every-layer DNI stacks three approximations (each SG learns from the one above);
# cDNI's SGs are only linear but see the label. The next figure shows why the label matters so
# much. (The paper trains 500k steps at a much smaller learning rate, so only the start of the race
# is visible here.)
#
# ### How good are the synthetic gradients?

# %%
sg_runs = [label for label in runs if runs[label]["cosine"]]
fig, axes = plt.subplots(2, len(sg_runs), figsize=(4.2 * len(sg_runs), 6.5), sharex=True, sharey="row",
                         constrained_layout=True)
for col, label in enumerate(sg_runs):
    run = runs[label]
    for i in sorted(run["cosine"]):
        where = "on the cut (after layer 2)" if len(run["cosine"]) == 1 else f"after layer {i + 1}"
        axes[0, col].plot(run["diag_steps"], run["cosine"][i], label=f"SG {where}")
        axes[1, col].plot(run["diag_steps"], run["ratio"][i], label=f"SG {where}")
    axes[0, col].set_title(label)
    axes[0, col].axhline(0, color="black", lw=0.8)
    axes[1, col].axhline(1, color="black", lw=0.8, ls="--")
    axes[1, col].set_xlabel("training step")
    axes[0, col].legend(fontsize=8)
axes[0, 0].set_ylabel(r"cosine similarity $\cos(\hat\delta_i, \delta_i)$")
axes[1, 0].set_ylabel(r"norm ratio $\|\hat\delta_i\| / \|\delta_i\|$")
axes[1, 0].set_yscale("log")
for ax in axes.flat:
    ax.grid(alpha=0.3)
fig.suptitle("Synthetic vs true gradient, measured by the trainer's diagnostic pass (never used for training)")
nb.show(fig, "sg_quality")

tail = max(1, len(runs[sg_runs[0]]["diag_steps"]) // 5)  # the last fifth of the diagnostic points
late_cos = {label: float(np.mean([v[-tail:] for v in runs[label]["cosine"].values()])) for label in sg_runs}
print("mean cosine over the last fifth of training (all SGs):", {k: round(v, 3) for k, v in late_cos.items()})
assert all(np.isfinite(v) for v in late_cos.values())
if not FAST:  # with a real budget the label makes the difference
    assert late_cos["every-layer cDNI"] > max(late_cos["one DNI"], late_cos["every-layer DNI"]) + 0.05, late_cos

# %% [markdown]
# A cosine of 1 would be backprop's direction; anything above 0 is, on average, a descent
# direction. Two very different pictures:
#
# - **cDNI**'s SGs point clearly the right way (cosines of a few tenths), best at the top, where the
#   SG regresses onto the true gradient; the bootstrapped ones below inherit the errors above.
# - **DNI**'s SGs (no label) fall towards cosine 0, and their predictions *shrink* (the norm ratio
#   falls). This is what L2 regression should do. Without the label, the best an SG can predict is
#   the *expected* gradient given $h_i$, $\mathbb E[\delta_i \mid h_i]$. At the logits the gradient
#   of one example is $(p - e_y)/N$, where $p$ is the network's output, a function of $h_i$ alone
#   (the modules above are deterministic). Averaging over the label given $h_i$,
#   $\mathbb E[(p - e_y)/N \mid h_i] = (p - P(y \mid h_i))/N$, which is **zero exactly when the
#   network's output equals the posterior of the label given $h_i$**, $p = P(\,\cdot \mid h_i)$;
#   the Jacobian of the modules above depends on $h_i$ only, so then $\mathbb E[\delta_i \mid h_i] = 0$
#   too. A network that fits its training data approaches that condition on the data it sees, and
#   most of the true gradient becomes *which* label came, which $h_i$ alone cannot tell. So the
#   lower modules of a DNI net get ever smaller pushes, and the layers above do most of the
#   learning.
#
# That is also why conditioning on the label (cDNI) is the variant that scales to deep nets in the
# paper's Table 1. (Exercise 2 asks how much of one DNI's result comes from its lower half at all.)
#
# ## 8. Asynchronous updates: $p_\text{update}$
#
# Now each module draws a coin every step and runs its backward and update only with probability
# $p_\text{update}$. Under backprop a module can only update if *every* module above it also ran
# its backward. With DNI each module needs only its own coin (and a synthetic gradient, which is
# always there). We train each method at a few values of $p_\text{update}$ (the $p = 1$ runs are
# the ones above) and count the updates.
#
# **$p^4$ here, $p^3$ in the paper.** The package draws a coin for *every* module, the top one and
# module 1 itself included: module 1 of a 4-module net updates under backprop only if all four coins
# come up, $p^4$. The paper's "$p^3$" counts the coins of the three layers *above* the first one:
# the probability that a gradient reaches it at all; multiply by its own coin and it is our $p^4$.
#
# **Exercise 2 (update probabilities).** Write the probability that module $i$ ($1$ = bottom) of an
# $n$-module net updates in a step, under `"bprop"` and under `"dni"`. The check compares it with
# the update counts the trainer actually recorded in the runs below (within four binomial standard
# deviations).

# %%
def update_probability(i, n, p, method):
    """Probability that module i (1 = bottom) of n updates in a step, method "bprop" or "dni", p = p_update."""
    # TODO (exercise 2)
    raise NotImplementedError


# %%
P_VALUES = [1.0, 0.2] if FAST else [1.0, 0.5, 0.2]
SWEEP = {label: CONFIGS[label] for label in ("backprop", "every-layer DNI", "every-layer cDNI")}
sweep = {(label, 1.0): runs[label] for label in SWEEP}
for label, (method, split) in SWEEP.items():
    for p in P_VALUES[1:]:
        sweep[label, p] = train(method, split, p_update=p, diagnose=False)
        print(f"{label:>17}, p_update={p}: test error {sweep[label, p]['eval'][-1][1]:5.2f} % "
              f"({sweep[label, p]['seconds']:.0f} s)")

# %%
LABEL_OF = {"bprop": "backprop", "dni": "every-layer DNI"}
nb.grade("02.update probability", update_probability, tol=4 * np.sqrt(0.25 / STEPS),  # four binomial std's at most
         against=lambda i, n_, q, method: sweep[LABEL_OF[method], q]["updates"][i - 1] / STEPS,
         cases=[(i, LAYERS, q, method) for q in P_VALUES[1:] for method in LABEL_OF for i in range(1, LAYERS + 1)])

# %%
p = P_VALUES[-1]
n = LAYERS
expected = {"backprop": [p ** (n - i) for i in range(n)], "every-layer DNI": [p] * n, "every-layer cDNI": [p] * n}
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2), constrained_layout=True)
width = 0.27
for k, label in enumerate(SWEEP):
    measured = sweep[label, p]["updates"] / STEPS
    bars = ax1.bar(np.arange(1, n + 1) + (k - 1) * width, measured, width, label=f"{label}: measured")
    if label == "backprop":  # the small bars are hard to see: write their counts
        for bar, count in zip(bars, sweep[label, p]["updates"]):
            ax1.annotate(f"{count:.0f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), xytext=(0, 3),
                         textcoords="offset points", ha="center", fontsize=8, color="tab:blue")
    ax1.scatter(np.arange(1, n + 1) + (k - 1) * width, expected[label], color="black", marker="_", s=200, zorder=3,
                label="expected ($p$ for DNI, $p^{n-i+1}$ for backprop)" if k == 0 else None)
    tolerance = 4 * np.sqrt(p * (1 - p) / STEPS) + 1e-9  # four binomial standard deviations
    assert np.all(np.abs(measured - np.array(expected[label])) <= tolerance), (label, measured)
ax1.set(xlabel="module (1 = bottom)", ylabel="fraction of steps in which it updated",
        title=f"How often each module updates at $p_{{update}}$ = {p} ({STEPS} steps;\n"
              "numbers above the blue bars: backprop's update counts)", ylim=(0, 1.6 * p))
ax1.set_xticks(range(1, n + 1))
ax1.legend(fontsize=8, loc="upper left", ncol=2)
for label, marker in zip(SWEEP, "osD"):
    ax2.plot(P_VALUES, [sweep[label, q]["eval"][-1][1] for q in P_VALUES], marker=marker, label=label)
ax2.set(xlabel="$p_{update}$ (probability that a module updates in a step)", ylabel="test error after the run (%)",
        title=f"Final test error vs $p_{{update}}$ ({STEPS} steps each)", xscale="log", yscale="log")
ax2.set_xticks(P_VALUES, [str(q) for q in P_VALUES])
ax2.xaxis.set_minor_formatter(NullFormatter())
plain_log_axis(ax2.yaxis)
ax2.legend()
for ax in (ax1, ax2):
    ax.grid(alpha=0.3, which="both")
nb.show(fig, "p_update")

# %%
for label in SWEEP:
    errs = [sweep[label, q]["eval"][-1][1] for q in P_VALUES]
    print(f"{label:>17}: test error at p_update " + ", ".join(f"{q}: {e:.2f} %" for q, e in zip(P_VALUES, errs))
          + f"  (grows by {errs[-1] - errs[0]:+.2f} points from p = {P_VALUES[0]} to {P_VALUES[-1]})")

# %% [markdown]
# The measured update frequencies match the arithmetic (the assertion allows four binomial
# standard deviations): at $p_\text{update} = 0.2$ backprop's bottom module updates in
# $0.2^4 \approx 0.2\,\%$ of the steps, so it stays almost at its random initialisation, while every
# DNI module still updates in 20 % of them. The printed errors say how each method's test error
# grows as $p_\text{update}$ falls in this run (in our normal-mode runs backprop's grew fastest and
# cDNI's least; every-layer DNI stayed behind cDNI throughout, for the reason seen in the cosine plot).
# Note that random lower layers are not useless: the layers above can still learn a decent
# classifier on their features, which is why backprop at 0.2 is not at chance. The paper reports
# that DNI on a 4-layer MNIST FCN still reaches 2 % error at $p_\text{update} = 0.2$ and that cDNI
# trains even at 0.05, after 500k steps; at our budget every method also simply gets fewer updates.
#
# ## Summary
#
# - A module updates from a synthetic gradient with the same vector-Jacobian product as backprop:
#   $\theta_i \leftarrow \theta_i - \alpha\,(\partial h_i/\partial\theta_i)^\top\hat\delta_i$; with
#   a perfect SG one DNI step *is* one backprop step (checked to $10^{-12}$).
# - The whole every-layer DNI algorithm is about thirty lines of NumPy (`dni_step`): forward,
#   predict, update now, fit the SG below; it moves every parameter exactly as the package's
#   `FeedForwardTrainer` does, over several steps with nonzero SGs.
# - The SG learns by L2 regression; in per-example units $\partial\ell/\partial A = u^\top(r - t)/N$,
#   $\partial\ell/\partial c = \sum_n (r - t)_n/N$ (checked against finite differences and the package).
# - Zero-initialising the SG's last layer (weights and bias) makes the first synthetic gradient exactly 0.
# - Every-layer DNI trains each SG on the next SG's prediction backpropagated one module (bootstrapping);
#   only the top SG sees the true gradient. cDNI adds the label and uses linear SGs.
# - The diagnostics show what the SGs learn: with the label (cDNI) their cosine with the true gradient
#   stays clearly positive; without it (DNI) an SG can only predict the expected gradient given $h$,
#   which tends to 0 as the network fits the data, and its cosine and norm fall towards 0.
# - With $p_\text{update} < 1$, backprop's lower modules starve ($p^{n-i+1}$), DNI's do not ($p$).
#
# ## More exercises (no grader)
#
# Exercises 1 and 2 above are graded by their check cells. Further questions:
#
# 0. Change `dni_step` (section 6) into cDNI: the SG also sees the one-hot label,
#    $r = hA + YB + c$. Build the package's twin with `mlp_synthesizer(..., conditioned=True,
#    num_classes=K_S)` and check your version against it step by step.
# 1. Suppose the SG's network output $\hat\delta$ directly (no per-example units) and learned from
#    $\ell' = \tfrac12\lVert\hat\delta - \delta\rVert^2$. Derive $\partial\ell'/\partial A$ for the linear SG.
#    The target's entries are $O(1/N)$, but Adam moves every weight by about its learning rate per step,
#    whatever the gradient's scale. Why would the predictions then tend to be far larger than their
#    targets? (PAPER.md §6 and the `Synthesizer` docstring.)
# 2. How much of one DNI's result comes from its lower half? Train the same two-module net with
#    `make_trainer("dni", [2, 2], p_update=[0.0, 1.0])` (the lower module never updates: random
#    features) and compare the test error with one DNI's.
# 3. Run every-layer DNI with `warmup=100` in `build_trainer` (the SGs are fitted for 100 steps before
#    the modules below use them). Does the cosine curve start higher? Does the test error change?
# 4. Extend the sweep to $p_\text{update} = 0.05$ and to more steps. Does cDNI still train, as in the paper?
# 5. cDNI's linear SG is $M(h, y) = hA + yB + C$ (the follow-up paper's notation; $A$ and $B$ are the
#    two row blocks of the package's `0.W`, $C$ its `0.b`). With the `Tap` recorder, check in a real
#    cDNI step that each synthetic gradient equals $(hA + YB + C)/N$ for the SG's parameters at that
#    moment. The follow-up paper shows that with such an SG the lower layers in effect minimise a
#    quadratic surrogate of $h$; which one, when $A$ is symmetric?
