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
# # 1. Locking: why backprop makes every layer wait
#
# **Goal.** Backpropagation trains a network in one strict order: every layer runs forward,
# then the loss, then every layer runs backward from the top, and only then can the bottom
# layer update its weights. Jaderberg et al. call the three waits *forward*, *update* and
# *backward locking*. In this notebook we
#
# 1. derive backprop by hand for a small MLP (linear + ReLU + softmax cross-entropy),
# 2. check the derivation against finite differences (`minidni.gradcheck`) and against the
#    package's own functions (`minidni.functional`),
# 3. read the three locks off the formulas,
# 4. **record** the order and timing of every forward, backward and update in real training
#    steps of the package's trainer (`minidni.dni.FeedForwardTrainer`), under backprop and
#    under DNI, and draw them as a timeline, and
# 5. train a small network both ways to see that DNI still learns, and
# 6. do three exercises (TODO stubs, each graded against the package by the cell after it).
#
# Set the environment variable `MINIDNI_FAST=1` for a quick run (smaller sizes, fewer steps,
# same code): that is what the test suite does. `MINIDNI_FIGURE_DIR=folder` also saves the
# figures there; `MINIDNI_SOLUTIONS=1` grades the reference solution where an exercise is still a
# TODO (so the notebook runs end to end). The normal mode takes about two minutes on a laptop CPU.
#
# **Notation** (the paper's symbols, the package's names):
#
# | paper | meaning | in the package | shape, units |
# |---|---|---|---|
# | $h_i = f_i(h_{i-1}; \theta_i)$ | output of module $i$ | `trainer.modules[i-1].forward(h)` | $N\times H$ |
# | $L$ | loss of the minibatch | `F.softmax_cross_entropy` | scalar, nats (mean over the batch) |
# | $\delta_i = \partial L/\partial h_i$ | true gradient at $h_i$ | `module.backward(delta, cache)` returns the one below | $N\times H$, nats per unit of $h_i$ |
# | $M_{i+1}$ | synthetic-gradient model on $h_i$ | `trainer.synthesizers[i-1]` ("SG $i$") | |
# | $\hat\delta_i = M_{i+1}(h_i)$ | synthetic gradient | `sg.predict(h)` | like $\delta_i$ |
# | $\sigma$ | scale on $\hat\delta$ (recurrent DNI, notebook 3) | `sg_scale` | 0.1 |
#
# The paper names the SG after the module whose gradient it replaces ($M_{i+1}$ sits on
# $h_i$); the package numbers it after the module it sits on (SG $i$).

# %%
import time
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np

import minidni.functional as F
from minidni import models
from minidni.backend import to_device, to_numpy
from minidni.data import mnist_or_standin
from minidni.dni import build_trainer
from minidni.dni.feedforward import error_percent
from minidni.gradcheck import GradientCheckError, elementwise_check
from minidni.notebook import Notebook

nb = Notebook("01")  # reads MINIDNI_FAST, MINIDNI_FIGURE_DIR, MINIDNI_SOLUTIONS, MINIDNI_DATA
FAST = nb.fast


# %% [markdown]
# **The picture first.** Left: backprop, where the arrows of the backward pass (orange) must
# come all the way down from the loss before module 1 can update. Right: DNI, where each module
# gets a synthetic gradient (purple) from a small model on its own output and updates at once;
# that model is trained later on a target (grey) coming from the module above.

# %%
def draw_schematic(ax, dni):
    """Three modules, the loss, and (for DNI) the SG models with where their targets come from."""
    from matplotlib.patches import FancyBboxPatch

    ys = [0.5, 2.0, 3.5]
    for k, y in enumerate(ys):
        ax.add_patch(FancyBboxPatch((0.0, y), 2.0, 0.8, boxstyle="round,pad=0.05", fc="#dbe9f6", ec="tab:blue"))
        ax.text(1.0, y + 0.4, f"module {k + 1}\n$h_{k + 1} = f_{k + 1}(h_{k})$", ha="center", va="center", fontsize=9)
    ax.add_patch(FancyBboxPatch((0.0, 5.0), 2.0, 0.6, boxstyle="round,pad=0.05", fc="#fde0c5", ec="tab:orange"))
    ax.text(1.0, 5.3, "loss $L(h_3, y)$", ha="center", va="center", fontsize=9)
    ax.text(1.0, -0.35, "input $x = h_0$", ha="center", va="center", fontsize=9)
    arrow = dict(arrowstyle="-|>", lw=1.6)
    for y0, y1 in [(-0.2, 0.45), (1.35, 1.95), (2.85, 3.45), (4.35, 4.95)]:
        ax.annotate("", (0.6, y1), (0.6, y0), arrowprops=dict(arrow, color="tab:blue"))  # forward
    if not dni:
        for y0, y1 in [(4.95, 4.35), (3.45, 2.85), (1.95, 1.35)]:
            ax.annotate("", (1.4, y1), (1.4, y0), arrowprops=dict(arrow, color="tab:orange"))  # backward
        ax.text(1.55, 3.2, r"$\delta_2$", color="tab:orange")
        ax.text(1.55, 1.7, r"$\delta_1$", color="tab:orange")
        ax.text(1.55, 4.7, r"$\partial L/\partial h_3$", color="tab:orange")
        ax.set_title("backprop: module 1 waits for everything above", fontsize=10)
    else:
        ax.annotate("", (1.4, 4.35), (1.4, 4.95), arrowprops=dict(arrow, color="tab:orange"))
        ax.text(1.55, 4.6, r"true $\partial L/\partial h_3$", color="tab:orange", fontsize=8)
        for k, y in enumerate(ys[:2]):
            ax.add_patch(FancyBboxPatch((3.0, y + 0.85), 1.6, 0.5, boxstyle="round,pad=0.05", fc="#e8dcf2", ec="tab:purple"))
            ax.text(3.8, y + 1.1, f"$M_{k + 2}$ (SG {k + 1})", ha="center", va="center", fontsize=9)
            ax.annotate("", (2.95, y + 1.0), (2.05, y + 0.85), arrowprops=dict(arrow, color="tab:blue"))
            ax.annotate("", (2.05, y + 0.65), (2.95, y + 0.95), arrowprops=dict(arrow, color="tab:purple"))
            ax.text(2.1, y + 0.25, rf"$\hat\delta_{k + 1}$: update now", color="tab:purple", fontsize=8)
            ax.annotate("", (4.3, y + 1.4), (2.05, y + 1.75), arrowprops=dict(arrow, color="gray", ls="--"))
            ax.text(4.45, y + 1.6, "target: what module\n" + f"{k + 2}'s backward returns", color="gray", fontsize=8)
        ax.set_title("DNI: every module updates from its SG's prediction", fontsize=10)
    ax.set(xlim=(-0.3, 6.3 if dni else 3.0), ylim=(-0.7, 5.9))
    ax.axis("off")


fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), constrained_layout=True, gridspec_kw={"width_ratios": [1, 2]})
draw_schematic(axes[0], dni=False)
draw_schematic(axes[1], dni=True)
nb.show(fig, "schematic")


# %% [markdown]
# ## 1. Notation and shapes
#
# A minibatch of $N$ examples $x \in \mathbb{R}^{N \times D}$ with integer labels
# $y \in \{0,\dots,K-1\}^N$ goes through two hidden layers of $H$ units and an output layer:
#
# $$
# \begin{aligned}
# z_1 &= x W_1 + b_1, & a_1 &= \max(z_1, 0), & W_1 &\in \mathbb{R}^{D\times H},\; z_1, a_1 \in \mathbb{R}^{N\times H}\\
# z_2 &= a_1 W_2 + b_2, & a_2 &= \max(z_2, 0), & W_2 &\in \mathbb{R}^{H\times H},\; z_2, a_2 \in \mathbb{R}^{N\times H}\\
# s &= a_2 W_3 + b_3, & p &= \mathrm{softmax}(s), & W_3 &\in \mathbb{R}^{H\times K},\; s, p \in \mathbb{R}^{N\times K}\\
# L &= -\frac{1}{N}\sum_{n=1}^{N} \log p_{n, y_n}.
# \end{aligned}
# $$
#
# The biases $b_\ell$ are row vectors added to every example. $Y \in \{0,1\}^{N\times K}$ is
# the one-hot matrix of the labels. We write $\bar v = \partial L / \partial v$ for the
# gradient of the loss with respect to any quantity $v$; it always has the shape of $v$.
#
# Tiny sizes, so that finite differences (two forward passes per number) stay cheap. We work
# in float64: in float32, finite differences are mostly rounding noise.

# %%
N, D, H, K = 5, 4, 6, 3
rng = np.random.default_rng(0)
x = rng.standard_normal((N, D))
y = rng.integers(0, K, size=N)
params = {
    "W1": rng.standard_normal((D, H)) / np.sqrt(D), "b1": 0.1 * rng.standard_normal(H),
    "W2": rng.standard_normal((H, H)) / np.sqrt(H), "b2": 0.1 * rng.standard_normal(H),
    "W3": rng.standard_normal((H, K)) / np.sqrt(H), "b3": 0.1 * rng.standard_normal(K),
}
for name, value in {"x": x, "y": y, **params}.items():
    print(f"{name:>2}: shape {value.shape}, dtype {value.dtype}")

# %% [markdown]
# ## 2. Backprop by hand
#
# **Softmax cross-entropy.** For one example, $-\log p_{y} = -s_{y} + \log\sum_k e^{s_k}$, so
# $\partial(-\log p_y)/\partial s_k = p_k - [k = y]$. With the mean over the batch:
#
# $$\bar s = \frac{1}{N}\,(p - Y) \qquad (N\times K).$$
#
# **Linear layer** $z = a W + b$ with an input $a \in \mathbb{R}^{N\times I}$ and
# $W \in \mathbb{R}^{I\times O}$ (for the top layer $I = H$, $O = K$). Each entry
# $z_{nj} = \sum_i a_{ni} W_{ij} + b_j$, so the chain rule gives
#
# $$\bar W = a^\top \bar z \;\;(I\times O), \qquad \bar b = \sum_{n} \bar z_{n,:}
# \;\;(O), \qquad \bar a = \bar z\, W^\top \;\;(N\times I).$$
#
# The weight gradient sums over the batch (every example uses the same $W$); the bias
# gradient is the column sum for the same reason.
#
# **ReLU** $a = \max(z, 0)$, elementwise: $\bar z = \bar a \odot \mathbb{1}[z > 0]$ (we take
# the subgradient 0 at $z = 0$).
#
# Chaining these from the top:
#
# $$
# \bar s = \tfrac{1}{N}(p - Y),\quad
# \bar a_2 = \bar s W_3^\top,\quad
# \bar z_2 = \bar a_2 \odot \mathbb{1}[z_2>0],\quad
# \bar a_1 = \bar z_2 W_2^\top,\quad
# \bar z_1 = \bar a_1 \odot \mathbb{1}[z_1>0],\quad
# \bar x = \bar z_1 W_1^\top,
# $$
#
# with $\bar W_3 = a_2^\top \bar s$, $\bar W_2 = a_1^\top \bar z_2$, $\bar W_1 = x^\top \bar z_1$
# and the biases as column sums. Here it is, written with plain NumPy, line by line:

# %%
def by_hand(x, y, W1, b1, W2, b2, W3, b3):
    """Loss and gradients of the 2-hidden-layer MLP, from the formulas above (plain NumPy)."""
    n = x.shape[0]
    z1 = x @ W1 + b1
    a1 = np.maximum(z1, 0)
    z2 = a1 @ W2 + b2
    a2 = np.maximum(z2, 0)
    s = a2 @ W3 + b3
    e = np.exp(s - s.max(axis=1, keepdims=True))  # shifting by the row maximum leaves softmax unchanged
    p = e / e.sum(axis=1, keepdims=True)
    Y = np.eye(s.shape[1])[y]
    loss = -np.log(p[np.arange(n), y]).mean()
    s_bar = (p - Y) / n
    a2_bar = s_bar @ W3.T
    z2_bar = a2_bar * (z2 > 0)
    a1_bar = z2_bar @ W2.T
    z1_bar = a1_bar * (z1 > 0)
    grads = {"x": z1_bar @ W1.T,
             "W1": x.T @ z1_bar, "b1": z1_bar.sum(0),
             "W2": a1.T @ z2_bar, "b2": z2_bar.sum(0),
             "W3": a2.T @ s_bar, "b3": s_bar.sum(0)}
    return loss, grads


loss_hand, grads_hand = by_hand(x, y, **params)
print(f"loss = {loss_hand:.6f} (a random 3-class guess gives log 3 = {np.log(3):.6f})")

# %% [markdown]
# ## 3. Check 1: the package's functions give the same numbers
#
# `minidni.functional` has each op as a forward/backward pair:
# `y, cache = op_forward(...)` and `grads = op_backward(dy, cache)`. Chaining them is exactly
# the derivation above, one call per line. The two must agree to rounding (float64).

# %%
def with_package(x, y, W1, b1, W2, b2, W3, b3):
    """The same MLP, chained from minidni.functional's forward/backward pairs."""
    z1, c1 = F.linear_forward(x, W1, b1)
    a1, m1 = F.relu_forward(z1)
    z2, c2 = F.linear_forward(a1, W2, b2)
    a2, m2 = F.relu_forward(z2)
    s, c3 = F.linear_forward(a2, W3, b3)
    loss, s_bar = F.softmax_cross_entropy(s, y)
    a2_bar, dW3, db3 = F.linear_backward(s_bar, c3)
    a1_bar, dW2, db2 = F.linear_backward(F.relu_backward(a2_bar, m2), c2)
    x_bar, dW1, db1 = F.linear_backward(F.relu_backward(a1_bar, m1), c1)
    return loss, {"x": x_bar, "W1": dW1, "b1": db1, "W2": dW2, "b2": db2, "W3": dW3, "b3": db3}


loss_pkg, grads_pkg = with_package(x, y, **params)
assert np.allclose(loss_pkg, loss_hand, rtol=1e-12, atol=0)
for name in grads_hand:
    assert np.allclose(grads_pkg[name], grads_hand[name], rtol=1e-10, atol=1e-14), name
    print(f"{name:>2}: max |hand - package| = {np.abs(grads_pkg[name] - grads_hand[name]).max():.1e}")

# %% [markdown]
# ## 4. Check 2: finite differences
#
# Agreement with the package only shows that two codes make the same mistake or none. The
# independent check is the definition of a derivative. For every input number $\theta_j$,
#
# $$\frac{\partial L}{\partial \theta_j} \approx \frac{L(\theta + \epsilon e_j) - L(\theta - \epsilon e_j)}{2\epsilon},
# \qquad \epsilon = 10^{-6},$$
#
# with an error of order $\epsilon^2$ (plus rounding). `minidni.gradcheck.elementwise_check`
# does this for every element of every input and raises `GradientCheckError` when the relative
# error of any element exceeds its tolerance (`rtol=1e-5`).

# %%
names = list(grads_hand)  # x, W1, b1, W2, b2, W3, b3


def loss_of(x_, W1, b1, W2, b2, W3, b3):
    return by_hand(x_, y, W1, b1, W2, b2, W3, b3)[0]


inputs = [x] + [params[k] for k in names[1:]]
errors = elementwise_check(loss_of, inputs, [grads_hand[k] for k in names], None, names=names)
for name, err in errors.items():
    print(f"{name:>2}: largest relative error vs finite differences = {err:.1e}")
assert max(errors.values()) < 1e-5

# %% [markdown]
# A check that cannot fail proves nothing, so we plant the most common bug, forgetting the
# $1/N$ of the batch mean in $\bar s$, and make sure the checker catches it:

# %%
wrong = {k: g * N for k, g in grads_hand.items()}  # every gradient is linear in s_bar, so all are N times too big
try:
    elementwise_check(loss_of, inputs, [wrong[k] for k in names], None, names=names)
except GradientCheckError as err:
    print("caught, as it should be:", str(err)[:160], "...")
else:
    raise AssertionError("the gradient check accepted a gradient N times too large")

# %% [markdown]
# ### Exercises 1 and 2: write two backward rules yourself
#
# Fill in the two functions below (plain NumPy, one to three lines each), then run the check cell:
# it compares your code with the package's `F.tanh_backward` and `F.linear_backward` on random
# inputs and prints a verdict.
#
# 1. **tanh.** $a = \tanh(z)$ elementwise. Given $\bar a$ and the forward's output $a$, return
#    $\bar z$. (Hint: $\frac{d}{dz}\tanh z = 1 - \tanh^2 z$; write it with $a$, not $z$.)
# 2. **Linear layer.** $z = xW + b$ with $x$ $(N\times I)$, $W$ $(I\times O)$. Given $\bar z$
#    $(N\times O)$, return $(\bar x, \bar W, \bar b)$ with the shapes of $x$, $W$, $b$.

# %%
def tanh_backward_by_hand(a_bar, a):
    """z_bar for a = tanh(z), from a_bar and a (same shapes)."""
    # TODO (exercise 1)
    raise NotImplementedError


def linear_backward_by_hand(z_bar, x, W):
    """(x_bar, W_bar, b_bar) for z = x W + b, from z_bar (N, O), x (N, I), W (I, O)."""
    # TODO (exercise 2)
    raise NotImplementedError


# %%
cases_tanh = [(rng.standard_normal((4, 3)), np.tanh(rng.standard_normal((4, 3)))) for _ in range(3)]
nb.grade("01.tanh backward", tanh_backward_by_hand, against=F.tanh_backward, cases=cases_tanh)
cases_linear = [(rng.standard_normal((5, 2)), rng.standard_normal((5, 4)), rng.standard_normal((4, 2)))
                for _ in range(3)]
nb.grade("01.linear backward", linear_backward_by_hand, cases=cases_linear,
         against=lambda dz, x_, W: F.linear_backward(dz, F.linear_forward(x_, W, np.zeros(W.shape[1]))[1]))

# %% [markdown]
# ## 5. The three locks, read off the formulas
#
# Look at what the first layer's update needs:
#
# $$\bar W_1 = x^\top \Big( \big(\underbrace{\tfrac1N (p - Y)}_{\text{needs } s,\ \text{the top}}\, W_3^\top \odot \mathbb{1}[z_2>0]\big) W_2^\top \odot \mathbb{1}[z_1 > 0] \Big).$$
#
# - **Forward locking.** Layer 2 cannot start until layer 1 has produced $a_1$.
# - **Update locking.** $\bar W_1$ needs $p$, i.e. the *forward pass of every layer above*
#   (and the loss).
# - **Backward locking.** It needs the products $\bar a_2 = \bar s W_3^\top$, then
#   $\bar z_2 = \bar a_2 \odot \mathbb{1}[z_2>0]$, then $\bar a_1 = \bar z_2 W_2^\top$: the
#   *backward pass of every layer above*, computed from the top down, each product waiting for the
#   one above it.
#
# So layer 1 cannot change its weights until the whole network has finished with this
# minibatch. Numerically: change a weight of the *top* layer and the *bottom* layer's gradient
# changes.

# %%
nudged = dict(params, W3=params["W3"] + 0.1 * rng.standard_normal(params["W3"].shape))
_, grads_nudged = by_hand(x, y, **nudged)
change = np.abs(grads_nudged["W1"] - grads_hand["W1"]).max() / np.abs(grads_hand["W1"]).max()
print(f"nudging W3 changes dL/dW1 by {100 * change:.0f} % of its largest entry")
assert change > 1e-3

# %% [markdown]
# DNI breaks the dependence by letting a small model $M_2$ *predict*
# $\bar a_1 \approx \hat\delta_1 = M_2(a_1)$ from $a_1$ alone. Layer 1 then updates with
# $\bar W_1 \approx x^\top (\hat\delta_1 \odot \mathbb{1}[z_1>0])$ as soon as its own forward is
# done; $M_2$ learns later, by regression, when the true $\bar a_1$ (or a better estimate)
# arrives. Notebook 2 derives that part. Here we only look at *when* things happen.
#
# ## 6. Recording a real training step
#
# The package's trainer, `FeedForwardTrainer`, trains a list of *modules* (here: the paper's
# fully connected net, each module Linear → BatchNorm → ReLU, the top one with the output
# layer). Each module is an object with `forward`, `backward` and `update` methods, and under
# DNI each synthesizer (SG) between two modules has `predict` and `fit`. We wrap these methods
# on the trainer's own objects so that every call appends *(who, what, start, end)* to a log,
# then run real training steps. Nothing else changes: the wrapped method calls the original.

# %%
@dataclass
class Event:
    who: str      # "module 1", "SG 1" (the synthesizer on module 1's output), "input model 2"
    what: str     # forward / backward / update / predict / fit
    start: float  # seconds since the step began
    end: float


class EventLog:
    """Wraps a trainer's modules, synthesizers and input models to record every call during `record`."""

    def __init__(self, trainer):
        self.events, self.on, self.t0 = [], False, 0.0
        for i, module in enumerate(trainer.modules):
            for what in ("forward", "backward", "update"):
                self._wrap(module, what, f"module {i + 1}")
        for i, sg in enumerate(trainer.synthesizers):
            for what in ("predict", "fit"):
                self._wrap(sg, what, f"SG {i + 1}")
        for i, im in enumerate(trainer.input_models or []):
            for what in ("predict", "fit"):
                self._wrap(im, what, f"input model {i + 2}")
        self.trainer = trainer

    def _wrap(self, obj, what, who):
        inner = getattr(obj, what)

        def recorded(*args, **kwargs):
            if not self.on:  # e.g. evaluation
                return inner(*args, **kwargs)
            start = time.perf_counter()
            out = inner(*args, **kwargs)
            self.events.append(Event(who, what, start - self.t0, time.perf_counter() - self.t0))
            return out

        setattr(obj, what, recorded)  # an instance attribute shadows the method

    def record(self, x, y):
        """Run one real training step and return its events in the order they started."""
        self.events, self.on, self.t0 = [], True, time.perf_counter()
        try:
            self.trainer.step(x, y)
        finally:
            self.on = False
        return sorted(self.events, key=lambda e: e.start)


def index_of(events, who, what):
    return next(i for i, e in enumerate(events) if e.who == who and e.what == what)


# %% [markdown]
# We need some data for these steps. The notebooks use MNIST when the data folder has it (the
# package's own resolution: `$MINIDNI_DATA`, else the user cache folder; `python -m minidni.data
# download mnist` fetches it), and otherwise a small synthetic 10-class problem of the same
# shape, so that everything runs anywhere. The arrays enter the device (a GPU under
# `MINIDNI_BACKEND=cupy`) once, here.

# %%
x_train, y_train, x_test, y_test = to_device(mnist_or_standin(3000 if FAST else 60000, 1000 if FAST else 10000,
                                                              folders=nb.data_folders))
print("shapes:", x_train.shape, y_train.shape, x_test.shape, y_test.shape)

# %% [markdown]
# One trainer per method on a 3-module net (the paper's 3-layer FCN). The third trainer is DNI
# with the *complete unlock*: each module above the first also gets a synthetic-*input* model that
# predicts its input from the image, so it need not wait for the module below either.
#
# A single recorded step is mostly timing noise (one call can take three times as long in one
# step as in the next, whenever something else runs on the computer), so we record many steps,
# check that the *order* of the calls is the same in every one, and draw each call from its
# **median** start to its **median** end over all of them.

# %%
WIDTH, BATCH = (64, 64) if FAST else (256, 256)
TIMED_STEPS = 5 if FAST else 40


def make_trainer(method, layers, **extra):
    nets = models.fcn(layers, width=WIDTH, rng=np.random.default_rng(0))
    return build_trainer(nets, method=method, in_shape=(784,), lr=1e-3, sg_width=WIDTH,
                         rng=np.random.default_rng(1), **extra)


def median_step(log, x, y, steps):
    """Record `steps` training steps (after one warm-up); check the call order never changes; return the
    events of one step with each call's median start and median end (seconds since the step began)."""
    log.record(x, y)  # warm-up: the first calls allocate memory
    recorded_steps = [log.record(x, y) for _ in range(steps)]
    order = [(e.who, e.what) for e in recorded_steps[0]]
    assert all([(e.who, e.what) for e in events] == order for events in recorded_steps), "the call order changed"
    starts = np.median([[e.start for e in events] for events in recorded_steps], axis=0)
    ends = np.median([[e.end for e in events] for events in recorded_steps], axis=0)
    return [Event(who, what, float(t0), float(t1)) for (who, what), t0, t1 in zip(order, starts, ends)]


xb, yb = x_train[:BATCH], y_train[:BATCH]
recorded = {}
for label, method, extra in [("backprop", "bprop", {}), ("DNI", "dni", {}),
                             ("DNI + synthetic inputs (complete unlock)", "dni", {"unlock_forward": True})]:
    recorded[label] = median_step(EventLog(make_trainer(method, 3, **extra)), xb, yb, TIMED_STEPS)
    print(f"{label}:\n  " + ", ".join(f"{e.who}.{e.what}" for e in recorded[label]))

# %% [markdown]
# The recorded orders say it all; we assert them so this notebook fails if the trainer's
# behaviour ever changes:

# %%
bp, dni, unlock = recorded.values()
# backprop: every forward happens before any update, and module 1 updates last
assert max(index_of(bp, f"module {i}", "forward") for i in (1, 2, 3)) < min(
    index_of(bp, f"module {i}", "update") for i in (1, 2, 3))
assert bp[-1].who == "module 1" and bp[-1].what == "update"
# DNI: module 1 has updated before module 2 even starts its forward pass
assert index_of(dni, "module 1", "update") < index_of(dni, "module 2", "forward")
assert index_of(dni, "module 2", "update") < index_of(dni, "module 3", "forward")
# complete unlock: every input model predicts before any module runs forward
assert max(i for i, e in enumerate(unlock) if e.what == "predict" and e.who.startswith("input")) < index_of(
    unlock, "module 1", "forward")
for label, events in recorded.items():
    i = index_of(events, "module 1", "update")
    print(f"{label}: module 1 updates as event {i + 1} of {len(events)}, "
          f"{1000 * events[i].end:.2f} ms into the step of {1000 * events[-1].end:.2f} ms (medians of {TIMED_STEPS} steps)")

# %% [markdown]
# ### The timeline
#
# Each row is one module (or one of the small models around it); each bar one call, from its
# median start to its median end over the recorded steps. Green stars mark weight updates. The
# dashed green line is the moment module 1's weights have changed, the dotted blue line the moment
# module 2 starts its forward pass: under backprop blue comes first, under DNI green does. Each
# panel has its own time axis (the steps differ in length: the small models cost compute too).

# %%
COLORS = {"forward": "tab:blue", "backward": "tab:orange", "update": "tab:green",
          "predict": "tab:purple", "fit": "tab:gray"}
LABELS = {"forward": "forward", "backward": "backward", "update": "update (weights change)",
          "predict": "prediction (SG: synthetic gradient; input model: synthetic input)",
          "fit": "regression step of an SG / input model"}


def row_order(events):
    rows = sorted({e.who for e in events}, key=lambda w: (int(w.split()[-1]), ["input", "module", "SG"].index(w.split()[0])))
    return {who: r for r, who in enumerate(rows)}


fig, axes = plt.subplots(len(recorded), 1, figsize=(11, 2.2 + 1.3 * sum(len(row_order(e)) for e in recorded.values()) / 3),
                         constrained_layout=True)
for ax, (label, events) in zip(axes, recorded.items()):
    rows = row_order(events)
    for e in events:
        ms = 1000 * e.start, 1000 * (e.end - e.start)
        ax.broken_barh([ms], (rows[e.who] - 0.35, 0.7), color=COLORS[e.what])
        if e.what == "update":
            ax.plot(1000 * e.end, rows[e.who], marker="*", color="darkgreen", markersize=13, zorder=3)
    t_up = 1000 * events[index_of(events, "module 1", "update")].end
    t_f2 = 1000 * events[index_of(events, "module 2", "forward")].start
    ax.axvline(t_up, color="darkgreen", ls="--", lw=1)
    ax.annotate("module 1 has updated", (t_up, len(rows) - 0.5), xytext=(4, 0), textcoords="offset points",
                color="darkgreen", va="center", fontsize=9)
    ax.axvline(t_f2, color="tab:blue", ls=":", lw=1.5)
    ax.annotate("module 2 starts its forward", (t_f2, -0.8), xytext=(4, 0), textcoords="offset points",
                color="tab:blue", va="center", fontsize=9)
    ax.set_yticks(range(len(rows)), list(rows))
    ax.set_ylim(-1.1, len(rows) - 0.2)
    ax.set_title(f"{label}: median training step of {1000 * events[-1].end:.1f} ms over {TIMED_STEPS} steps "
                 f"(3-module FCN, batch {BATCH}, width {WIDTH})")
    ax.set_xlabel("time since the step began (ms; each bar: median start to median end of the call)")
    ax.grid(axis="x", alpha=0.3)
handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in COLORS.values()]
fig.legend(handles, list(LABELS.values()), loc="outside lower center", ncol=3, fontsize=9)
nb.show(fig, "timeline")
fwd_ms = {label: 1000 * float(np.median([e.end - e.start for e in events if e.what == "forward" and e.who.startswith("module")]))
          for label, events in recorded.items()}
print("median duration of a module's forward (ms):", {k: round(v, 2) for k, v in fwd_ms.items()})

# %% [markdown]
# Under **backprop** the green stars run from the top module down, and module 1's comes last:
# it waited for three forwards and two backwards above it. Under **DNI** module 1 updates right
# after its own forward and backward, using SG 1's prediction, *before module 2 has even started*;
# SG 1 is fitted later, once module 2's backward has produced its target. What this figure shows
# is the *order* and the number of calls; the durations are medians of one machine's timings
# (printed above: the same module's forward under each method), not a benchmark. In one Python
# process the calls still run one after another, so
# the step is not shorter (it is longer: the SGs cost compute). What changed is the
# *dependencies*: after its update, module 1 is free to take the next minibatch while module 2
# works on this one, which is what makes pipelining across devices possible. With the **complete
# unlock**, every module's input is predicted up front from the image (the purple bars at the
# start), so no module needs another's output even for its forward pass. The recorded calls still
# come one after another because one process runs them all, but module 2's forward reads input
# model 2's prediction, not module 1's output; the real output of module 1 only serves as the
# regression target of input model 2 (grey bar).
#
# **The payoff in wall-clock time** needs modules on separate workers: the repository's
# benchmark `python -m minidni.bench parallel` runs a decoupled and a locked pipeline of Ray
# workers side by side and draws `figures/bench_parallel.png` (examples per second, worker
# utilisation and test error against time; the README quotes its measured speed-up). A single
# process cannot show it, so this notebook does not try to estimate a speed-up from its bars.
#
# ## 7. How long module 1 waits, as the network gets deeper
#
# Same recording, now for nets of 2 to 6 modules: how many calls happen in the step before
# module 1's update, and how many milliseconds into the step it comes (median over the recorded
# steps).
#
# **Exercise 3 (count the wait).** Before running the next cells, work out how many calls of the
# trainer (forwards, backwards, updates) happen in a backprop step *before* module 1's update, in
# a net of $n$ modules, and write it as a function of $n$. The check grades it against the
# recorded steps.

# %%
def bprop_calls_before_update(n):
    """Number of forward/backward/update calls in a backprop step before module 1 updates (n modules)."""
    # TODO (exercise 3): one line
    raise NotImplementedError


# %%
depths = list(range(2, 7))
waits = {"backprop": ([], []), "DNI": ([], [])}
for layers in depths:
    for label, method in (("backprop", "bprop"), ("DNI", "dni")):
        events = median_step(EventLog(make_trainer(method, layers)), xb, yb, TIMED_STEPS)
        i = index_of(events, "module 1", "update")
        waits[label][0].append(i)
        waits[label][1].append(1000 * events[i].start)
print({k: v[0] for k, v in waits.items()})
nb.grade("01.backprop wait", bprop_calls_before_update, against=lambda n: waits["backprop"][0][depths.index(n)],
         cases=[(n,) for n in depths], tol=0)
assert waits["DNI"][0] == [3] * len(depths)  # its own forward, SG 1's prediction, its own backward

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
for label, marker in (("backprop", "o"), ("DNI", "s")):
    ax1.plot(depths, waits[label][0], marker=marker, label=label)
    ax2.plot(depths, waits[label][1], marker=marker, label=label)
ax1.set(xlabel="number of modules in the network", ylabel="calls before module 1 updates (count)",
        title="Work module 1 must wait for (recorded)")
ax2.set(xlabel="number of modules in the network", ylabel="time until module 1 updates (ms, median)",
        title=f"When module 1 updates within a step (batch {BATCH})")
for ax in (ax1, ax2):
    ax.set_xticks(depths)
    ax.legend()
    ax.grid(alpha=0.3)
nb.show(fig, "wait_vs_depth")

# %% [markdown]
# Under backprop module 1 waits for a number of calls that grows with depth (exercise 3 says
# how many: $n$ forwards, then a backward and an update for each of the $n-1$ modules above, then
# its own backward). Under DNI it is always 3 calls: its own forward, its SG's prediction and its
# own backward. The times on the right are medians measured on whatever machine runs this notebook,
# so they are noisier than the counts on the left; read them against the counts.
#
# ## 8. A tiny run: does DNI still learn?
#
# Updating from a *predicted* gradient only helps if the prediction is good enough. We train the
# 3-module FCN with backprop, with DNI (each SG: two hidden layers, as in the paper, but narrower),
# and with "no backprop" (only the output layer learns; the hidden layers stay random), all with
# Adam at lr $10^{-3}$ on the same minibatches, and measure the test error.
#
# One more run is a *control*. Under DNI the top module (its hidden layer and the output layer)
# trains with the true loss gradient, so part of any gain over "no backprop" has nothing to do with
# synthetic gradients. The control is DNI with modules 1 and 2 frozen (`p_update=[0, 0, 1]`: they
# never update); the gap between it and DNI is what the synthetic gradients bought.

# %%
STEPS, EVAL_EVERY = (120, 40) if FAST else (1000, 100)
curves = {}
RUNS = {"backprop": ("bprop", 1.0), "DNI": ("dni", 1.0), "no backprop (top layer only)": ("no-bprop", 1.0),
        "control: DNI, modules 1-2 frozen": ("dni", [0.0, 0.0, 1.0])}
for label, (method, p_update) in RUNS.items():
    trainer = make_trainer(method, 3, p_update=p_update)
    order = np.random.default_rng(2)
    losses, evals, start = [], [], time.perf_counter()
    for step in range(1, STEPS + 1):
        idx = to_device(order.integers(0, len(x_train), BATCH))
        losses.append(trainer.step(x_train[idx], y_train[idx]).loss)  # a 0-d device array: no host sync
        if step % EVAL_EVERY == 0:
            evals.append((step, error_percent(trainer.modules, x_test, y_test)))
    curves[label] = (np.array([float(v) for v in to_numpy(losses)]), evals, time.perf_counter() - start)
    print(f"{label:>33}: test error {evals[-1][1]:5.2f} % after {STEPS} steps ({curves[label][2]:.1f} s)")

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
window = 5 if FAST else 50
for label, (losses, evals, _) in curves.items():
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    ax1.plot(np.arange(window, len(losses) + 1), smooth, label=label)
    ax2.plot(*zip(*evals), marker="o", label=label)
ax1.set(xlabel="training step", ylabel=f"training loss (nats, mean of {window} steps)",
        title="Training loss", yscale="log")
ax2.set(xlabel="training step", ylabel="test error (%)", title=f"Test error on {len(x_test)} held-out images")
for ax in (ax1, ax2):
    ax.legend()
    ax.grid(alpha=0.3)
nb.show(fig, "tiny_run")

final = {label: evals[-1][1] for label, (_, evals, _) in curves.items()}
assert all(np.isfinite(v) for v in final.values())
if not FAST:  # at the full budget the ordering is clear; in fast mode the runs are too short to judge
    assert final["DNI"] < final["no backprop (top layer only)"], final

# %%
bp_err, dni_err = final["backprop"], final["DNI"]
ctrl_err, nobp_err = final["control: DNI, modules 1-2 frozen"], final["no backprop (top layer only)"]
closest = min(abs(a[1] - b[1]) for a, b in zip(curves["DNI"][1], curves["control: DNI, modules 1-2 frozen"][1]))
late = {label: float(losses[-len(losses) // 10:].mean()) for label, (losses, _, _) in curves.items()}
print(f"final test error (%): backprop {bp_err:.2f}, DNI {dni_err:.2f}, control {ctrl_err:.2f}, "
      f"no backprop {nobp_err:.2f}  ({STEPS} steps)")
print(f"DNI's lead over 'no backprop': {nobp_err - dni_err:+.2f} points, of which the control (lower modules "
      f"frozen) already has {nobp_err - ctrl_err:+.2f}; what the synthetic gradients added: {ctrl_err - dni_err:+.2f}")
print(f"closest approach of the DNI and control test-error curves: {closest:.2f} points")
print("training loss over the last tenth of the run (nats):", {k: round(v, 3) for k, v in late.items()})

# %% [markdown]
# How to read these numbers (printed above, from this run; at the fast setting the runs are too
# short to rank anything). Compare DNI with backprop *and* with the control. Under DNI the top
# module trains with the true gradient, so the control's lead over "no backprop" is the part of
# DNI's result that has nothing to do with synthetic gradients; only the DNI − control gap is what
# the lower modules gained from gradients *predicted* before the true ones existed. In our normal
# runs on MNIST that gap was a small part of DNI's lead, and the two curves came close along the
# way: look at the curves, and at the training losses, before crediting the synthetic gradients.
# Notebook 2 looks inside the synthetic gradients and shows why an SG that does not see the label
# has little to say once the network fits the data.
#
# ## Summary
#
# - Backprop for linear + ReLU + softmax cross-entropy is a short chain of matrix products:
#   $\bar s = (p - Y)/N$, $\bar W = a^\top \bar z$, $\bar b = \sum_n \bar z_n$,
#   $\bar a = \bar z W^\top$, $\bar z = \bar a \odot \mathbb 1[z>0]$. We checked it against
#   finite differences and against `minidni.functional`, and saw the checker reject a planted bug.
# - The bottom layer's gradient contains every layer above, forward and backward: it is
#   *update locked* and *backward locked*; each layer is also *forward locked* on the one below.
# - Recorded from real steps of the package's trainer (medians over many steps): under backprop
#   module 1 updates last, after $3n-1$ calls; under DNI it updates after 3 calls, before module 2
#   runs forward; with synthetic inputs no module waits for another at all.
# - DNI still learns; a control with frozen lower modules separates what the top module (which
#   sees the true gradient) contributes from what the synthetic gradients add (the printed
#   comparison). The wall-clock payoff of decoupling needs parallel workers
#   (`figures/bench_parallel.png`).
#
# ## More exercises (no grader)
#
# Exercises 1-3 above are graded by their check cells. Further questions:
#
# 1. Replace the ReLUs by tanh in `by_hand` (use your `tanh_backward_by_hand`), and check the whole
#    network with `elementwise_check`.
# 2. Plant a subtler bug: use `z1 >= 0` instead of `z1 > 0` in `by_hand`. Does the gradient
#    check notice? Why (think about how likely $z_1 = 0$ exactly is)?
# 3. Record a backprop step with `make_trainer("bprop", 4, p_update=0.5)` a few times. Which
#    modules update, and why does module 1 update with probability $0.5^4$? Then do the same with
#    DNI. (The trainer's docstring explains the coins.)
# 4. In the complete-unlock timeline, which events must happen before module 3's `update`? Draw the
#    dependency graph of one step for backprop and for DNI.
# 5. Our timeline runs in one process, so DNI's step is *longer* than backprop's. Sketch how two
#    workers (modules 1 and 2 on one, module 3 on the other) would overlap consecutive minibatches
#    under DNI, then compare your sketch with the measured pipelines of
#    `python -m minidni.bench parallel` (`figures/bench_parallel.png`).
