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
# # 4. Understanding synthetic gradients: surrogate losses, log loss, spurious critical points
#
# **Goal.** A module trained through a synthetic gradient (SG) never sees the true gradient
# $\partial L/\partial h$ of the loss at its output $h$: it follows a *prediction*
# $M(h, y)$. What does it then minimise? Czarnecki et al. (*Understanding Synthetic Gradients
# and Decoupled Neural Interfaces*, ICML 2017; `PAPER.md` §4) answer this for the simplest SG,
# a linear one, and draw three lessons that we re-derive and check here:
#
# 1. A linear SG $M(h, y) = hA + yB + C$ is the gradient of a **quadratic surrogate loss**
#    $\tfrac12 hAh^\top + (yB + C)h^\top$ (when $A$ is symmetric), so the layers below minimise
#    that surrogate instead of the true loss.
# 2. If the true gradient is itself linear in $h$ (mean squared error), the SG can represent it
#    and training reaches the backprop solution. With **log loss** on separable data the true
#    gradient is step-like, a linear SG cannot follow it, and training stalls at a higher loss;
#    an SG with a **sigmoid** can follow it again. We rebuild a small version of their Table 2.
# 3. An SG can create **spurious critical points**: parameters where training stops although
#    the true gradient is far from zero.
#
# Everything runs on the package: `minidni.dni.Synthesizer` (the SG models), `minidni.layers`,
# `minidni.optim.Adam`, `minidni.functional` (losses) and `minidni.gradcheck` (finite
# differences). Set `MINIDNI_FAST=1` for a quick run (fewer steps, larger learning rate, same
# code): that is what the test suite does. `MINIDNI_FIGURE_DIR=folder` saves the figures;
# `MINIDNI_SOLUTIONS=1` grades the reference solution where one of the two exercises (TODO stubs,
# graded by the cell after each) is not done yet. The normal mode takes about a minute or two on a
# laptop CPU. Parameters live on the compute device (a GPU under `MINIDNI_BACKEND=cupy`): host
# arrays go in through `to_device` and come back for plotting through `to_numpy`.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FuncFormatter

import minidni.functional as F
from minidni.backend import get_xp, to_device, to_numpy
from minidni.dni import Synthesizer, mlp_synthesizer
from minidni.gradcheck import check_pair, numerical_gradient
from minidni.layers import Layer, Linear, Sequential
from minidni.notebook import Notebook
from minidni.optim import Adam

nb = Notebook("04")  # reads MINIDNI_FAST, MINIDNI_FIGURE_DIR, MINIDNI_SOLUTIONS, MINIDNI_DATA
FAST = nb.fast


# %% [markdown]
# ## 1. Notation and shapes
#
# One example at a time first. The module below the SG produces a row vector
# $h \in \mathbb{R}^{1\times D}$ from its parameters $\theta$; the context (the label, for a
# conditioned SG) is a row $y \in \mathbb{R}^{1\times K}$. A **linear synthetic gradient** is
#
# $$M(h, y) = hA + yB + C, \qquad A \in \mathbb{R}^{D\times D},\; B \in \mathbb{R}^{K\times D},\;
# C \in \mathbb{R}^{1\times D},$$
#
# an estimate of $\delta = \partial L/\partial h$ (a $1\times D$ row). The module updates at once
# with $\theta \leftarrow \theta - \alpha\, M(h, y)\, \partial h/\partial\theta$, and $M$ is
# trained by regression, $\min \lVert M(h, y) - \delta\rVert^2$, when $\delta$ arrives.
#
# For a batch of $N$ examples, $h$ is $N\times D$ and $y$ is $N\times K$, one row each. The
# package's `Synthesizer` works in **per-example units** (its docstring explains why): its
# network computes $hA + yB + C$ row by row and `predict` returns that divided by $N$, the
# gradient of the *batch-mean* loss. In package terms a linear conditioned SG is
# `mlp_synthesizer(D, hidden=0, conditioned=True, num_classes=K)`: one `Linear` layer on the
# concatenation $[h, y]$, so its weight matrix is $\begin{bmatrix}A\\B\end{bmatrix}$
# ($(D + K)\times D$) and its bias is $C$.
#
# | symbol | meaning | in the package | shape, units |
# |---|---|---|---|
# | $h$ | output of the module below the SG | `module.forward(x)[0]` | $N\times D$ |
# | $\delta = \partial L/\partial h$ | true gradient | `F.mse(h, y)[1]`, `F.sigmoid_cross_entropy(h, y)[1]` | $N\times D$, batch-mean units |
# | $M(h, y) = hA + yB + C$ | linear SG, per example | `mlp_synthesizer(D, hidden=0, conditioned=True)`: `0.W` $= [A; B]$, `0.b` $= C$ | $N\times D$, per-example units |
# | $\hat\delta = M/N$ | what the module receives | `sg.predict(h, labels)[0]` | like $\delta$ |
# | $L_{SG}$ | quadratic surrogate whose gradient is $M$ | (section 2) | nats (up to a constant and scale) |
#
# **The picture**: the module below the SG updates from $\hat\delta = M(h, y)/N$ (purple), as if it
# descended the surrogate $L_{SG}$; the SG learns by regression onto the true $\delta$ (grey), the
# gradient of the true loss $L$ that the module itself never uses.

# %%
def draw_surrogate_schematic(ax):
    from matplotlib.patches import FancyBboxPatch

    arrow = dict(arrowstyle="-|>", lw=1.6)
    boxes = {"module": ((0.0, 0.0), "#dbe9f6", "tab:blue", "module\n$h = x\\theta + b$"),
             "sg": ((3.0, 1.3), "#e8dcf2", "tab:purple", "SG  $M(h, y) = hA + yB + C$"),
             "loss": ((3.0, -1.3), "#fde0c5", "tab:orange", "true loss $L(h, y)$")}
    for (xy, fc, ec, text) in boxes.values():
        ax.add_patch(FancyBboxPatch(xy, 2.6 if ec != "tab:blue" else 1.8, 0.8, boxstyle="round,pad=0.05", fc=fc, ec=ec))
        ax.text(xy[0] + (1.3 if ec != "tab:blue" else 0.9), xy[1] + 0.4, text, ha="center", va="center", fontsize=9)
    ax.annotate("", (2.95, 1.6), (1.85, 0.55), arrowprops=dict(arrow, color="tab:blue"))
    ax.annotate("", (2.95, -0.9), (1.85, 0.25), arrowprops=dict(arrow, color="tab:blue"))
    ax.text(2.1, 1.25, "$h, y$", color="tab:blue", fontsize=9)
    ax.annotate("", (1.2, 0.85), (3.2, 1.35), arrowprops=dict(arrow, color="tab:purple", connectionstyle="arc3,rad=0.3"))
    ax.text(-0.2, 2.2, r"$\hat\delta = M/N$ back to the module: it descends $L_{SG}$", color="tab:purple", fontsize=9)
    ax.annotate("", (5.0, 1.25), (5.0, -0.45), arrowprops=dict(arrow, color="gray", ls="--"))
    ax.text(5.15, 0.4, r"target $\delta = \partial L/\partial h$" + "\n(regression only)", color="gray", fontsize=9)
    ax.set(xlim=(-0.3, 7.0), ylim=(-1.6, 2.5))
    ax.axis("off")


fig, ax = plt.subplots(figsize=(8, 3.4), constrained_layout=True)
draw_surrogate_schematic(ax)
nb.show(fig, "schematic")

# %% [markdown]
# ## 2. A linear SG is the gradient of a quadratic surrogate loss
#
# **Derivation.** We look for a scalar $L_{SG}(h)$ whose gradient is $M(h, y)$: then the update
# $\theta \leftarrow \theta - \alpha M\, \partial h/\partial \theta = \theta - \alpha\, \partial
# L_{SG}(h(\theta))/\partial\theta$ is plain gradient descent on $L_{SG}$. Try
#
# $$L_{SG}(h) = \tfrac12\, h A h^\top + (yB + C)\, h^\top
# = \tfrac12 \sum_{i,j} h_i A_{ij} h_j + \sum_j (yB + C)_j h_j .$$
#
# Differentiating with respect to $h_k$ (the quadratic term has $h_k$ in the left *and* in the
# right factor):
#
# $$\frac{\partial L_{SG}}{\partial h_k} = \tfrac12 \sum_j A_{kj} h_j + \tfrac12 \sum_i h_i A_{ik}
# + (yB+C)_k \quad\Longrightarrow\quad \nabla_h L_{SG} = h\,\frac{A + A^\top}{2} + yB + C .$$
#
# - **Symmetric $A$** ($A = A^\top$): $\nabla_h L_{SG} = hA + yB + C = M(h, y)$. The layers below
#   an SG descend the quadratic surrogate $L_{SG}$, whatever the true loss is. Every critical
#   point of the true loss at which the SG equals the true gradient is still critical, but the
#   surrogate's minimiser (where $hA + yB + C = 0$) is where training goes.
# - **Non-symmetric $A$**: split $A = S + K$ with $S = \tfrac12(A + A^\top)$ symmetric and
#   $K = \tfrac12(A - A^\top)$ skew ($K^\top = -K$). Because $hKh^\top = 0$, the quadratic form
#   only sees $S$, and $\nabla_h L_{SG} = M - hK$. Could another loss do better? No: a field
#   $F(h)$ is a gradient only if its Jacobian is symmetric ($\partial F_k/\partial h_i =
#   \partial^2 L/\partial h_i\partial h_k = \partial F_i/\partial h_k$), and the Jacobian of $M$
#   is $\partial M_k/\partial h_i = A_{ik}$. Equivalently, a gradient field has zero
#   *circulation* around every closed loop. For the circle $h(\varphi) = r(\cos\varphi\, e_i +
#   \sin\varphi\, e_j)$,
#
#   $$\oint M\cdot dh = \int_0^{2\pi} r^2 \big(\cos\varphi\, e_i + \sin\varphi\, e_j\big) A
#   \big(-\sin\varphi\, e_i + \cos\varphi\, e_j\big)^\top d\varphi = \pi r^2\,(A_{ij} - A_{ji}),$$
#
#   since $\int\cos^2 = \int \sin^2 = \pi$ and $\int \sin\cos = 0$ over a period. So a linear SG
#   with a non-symmetric $A$ is **not the gradient of any loss**: it adds a rotation $hK$
#   (orthogonal to $h$), and the lower layers stop where $hA + yB + C = 0$, which is not the
#   minimiser of the symmetric surrogate. When does a trained SG come out symmetric? If the
#   true loss is quadratic in $h$, the true gradient is $hH + g$ with a symmetric Hessian $H$ and
#   the regression recovers $A = H$. And with a single output unit ($D = 1$, as in the
#   experiments below and in Czarnecki et al.'s Table 2) $A$ is a $1\times 1$ number: always
#   symmetric.
#
# For a batch, the package's SG returns $M/N$ per row, which is the gradient of the batch
# surrogate $\frac{1}{N}\sum_n L_{SG}(h_n, y_n)$.
#
# **Check 1: the gradient of the surrogate is the package's SG.** We build the package's linear
# conditioned SG, write a random symmetric $A$, a random $B$ and $C$ into its one `Linear` layer,
# and compare its `predict` with central differences of the surrogate
# (`minidni.gradcheck.numerical_gradient`, float64).

# %%
D, K, N = 4, 3, 5
rng = np.random.default_rng(0)
h = rng.standard_normal((N, D))
labels = rng.integers(0, K, size=N)
Y = np.eye(K)[labels]                      # one-hot rows y_n, (N, K)
A0 = rng.standard_normal((D, D))
A_sym = (A0 + A0.T) / 2                    # symmetric
B = rng.standard_normal((K, D))
C = rng.standard_normal(D)


def linear_sg(A, B, C):
    """The package's linear cDNI synthesizer with weights [A; B] and bias C (float64)."""
    sg = mlp_synthesizer(A.shape[0], hidden=0, conditioned=True, num_classes=B.shape[0],
                         rng=np.random.default_rng(1), dtype=np.float64)
    sg.net.params["0.W"][...] = to_device(np.vstack([A, B]))   # in place: the layer keeps its arrays
    sg.net.params["0.b"][...] = to_device(C)
    return sg


def surrogate(h, Y, A, B, C):
    """Batch-mean quadratic surrogate (1/N) sum_n [1/2 h_n A h_n^T + (y_n B + C) h_n^T]."""
    return (0.5 * np.einsum("ni,ij,nj->n", h, A, h) + ((Y @ B + C) * h).sum(1)).mean()


sg = linear_sg(A_sym, B, C)
delta_hat = to_numpy(sg.predict(*to_device((h, labels)))[0])         # (N, D): M(h, y) / N
numeric = numerical_gradient(lambda hh: surrogate(hh, Y, A_sym, B, C), h)
print("package SG, first row:       ", delta_hat[0].round(6))
print("d surrogate / dh, first row: ", numeric[0].round(6))
assert np.allclose(numeric, delta_hat, rtol=1e-7, atol=1e-9)
assert np.allclose(delta_hat, (h @ A_sym + Y @ B + C) / N, rtol=1e-12)

# %% [markdown]
# **Exercise 1 (the surrogate's gradient for any $A$).** Write $\nabla_h$ of the batch surrogate
# $\frac1N\sum_n \big[\tfrac12 h_nAh_n^\top + (y_nB + C)h_n^\top\big]$ for a general (not
# necessarily symmetric) $A$, for the whole batch ($N\times D$). The check compares it with central
# differences of `surrogate` (`minidni.gradcheck.numerical_gradient`) for random non-symmetric $A$.

# %%
def surrogate_gradient(h, Y, A, B, C):
    """grad_h of surrogate(h, Y, A, B, C): h (N, D), Y (N, K), A (D, D), B (K, D), C (D,) -> (N, D)."""
    # TODO (exercise 1)
    raise NotImplementedError


surrogate_cases = [(rng.standard_normal((N, D)), Y, rng.standard_normal((D, D)), B, C) for _ in range(3)]
nb.grade("04.surrogate gradient", surrogate_gradient, cases=surrogate_cases, tol=1e-7,
         against=lambda h_, Y_, A_, B_, C_: numerical_gradient(lambda hh: surrogate(hh, Y_, A_, B_, C_), h_))

# %% [markdown]
# **Check 2: a non-symmetric $A$.** The surrogate's gradient is now $hS + yB + C$, which misses
# the SG by exactly the rotation $hK$, and the SG's circulation around a circle in the
# $(e_0, e_1)$ plane is $\pi r^2 (A_{01} - A_{10})$, not 0 (we integrate numerically with the
# midpoint rule; $y$ and $C$ are set to 0 here, they add a constant field whose circulation is 0).

# %%
S, Kskew = (A0 + A0.T) / 2, (A0 - A0.T) / 2
sg_ns = linear_sg(A0, B, C)
delta_ns = to_numpy(sg_ns.predict(*to_device((h, labels)))[0])
numeric_ns = numerical_gradient(lambda hh: surrogate(hh, Y, A0, B, C), h)
assert np.allclose(numeric_ns, (h @ S + Y @ B + C) / N, rtol=1e-7, atol=1e-9)
assert np.allclose(delta_ns - numeric_ns, h @ Kskew / N, rtol=1e-6, atol=1e-9)
print(f"max |SG - grad surrogate| = {np.abs(delta_ns - numeric_ns).max():.3f} (= max |hK| / N)")
assert np.allclose((h * (h @ Kskew)).sum(1), 0.0, atol=1e-12)   # the rotation is orthogonal to h


def circulation(A, i, j, r=1.5, points=4000):
    """Numerical line integral of the field h A around a circle of radius r in the (e_i, e_j) plane."""
    phi = (np.arange(points) + 0.5) * 2 * np.pi / points
    h_loop = np.zeros((points, A.shape[0]))
    h_loop[:, i], h_loop[:, j] = r * np.cos(phi), r * np.sin(phi)
    dh = np.zeros_like(h_loop)
    dh[:, i], dh[:, j] = -r * np.sin(phi), r * np.cos(phi)
    return ((h_loop @ A) * dh).sum() * 2 * np.pi / points


r = 1.5
for name, A in [("symmetric A", A_sym), ("non-symmetric A", A0)]:
    numeric_circ, formula = circulation(A, 0, 1, r), np.pi * r**2 * (A[0, 1] - A[1, 0])
    print(f"{name:>16}: circulation {numeric_circ:+.6f}, formula pi r^2 (A01 - A10) = {formula:+.6f}")
    assert np.isclose(numeric_circ, formula, rtol=1e-6, atol=1e-9)

# %% [markdown]
# **Check 3: the layers below descend the surrogate.** Put a `Linear` module under the SG,
# $h = xW + b$. Backpropagating the SG through it (what a DNI module does) must give the
# gradient of the surrogate with respect to the module's own parameters (chain rule), which we
# again get by finite differences.

# %%
x_small = rng.standard_normal((N, 6))
module = Linear(6, D, rng=rng, dtype=np.float64)
h_mod, cache = module.forward(to_device(x_small))
delta_mod, _ = sg.predict(h_mod, to_device(labels))
grads = to_numpy(module.backward(delta_mod, cache)[1])   # the DNI update direction of the module
b_mod = np.array(to_numpy(module.params["b"]))


def surrogate_of_W(W):
    return surrogate(x_small @ W + b_mod, Y, A_sym, B, C)


numeric_W = numerical_gradient(surrogate_of_W, np.array(to_numpy(module.params["W"])))
assert np.allclose(numeric_W, grads["W"], rtol=1e-7, atol=1e-9)
print(f"max |dL_SG/dW (finite differences) - module backward of the SG| = {np.abs(numeric_W - grads['W']).max():.1e}")

# %% [markdown]
# ## 3. One linear layer trained through an SG: MSE versus log loss
#
# **Setup** (after Czarnecki et al.'s Table 2: Gaussian data, zero-initialised linear SGs,
# Adam). A dataset of $N = 256$ Gaussian inputs $x_n \in \mathbb{R}^d$ and a random teacher
# $w^\star \sim \mathcal N(0, I_d)$:
#
# - **regression**: $y_n = x_n w^\star/\sqrt d + 0.1\,\varepsilon_n$, loss
#   $L = \frac{1}{2N}\sum_n (h_n - y_n)^2$ (`F.mse`), true gradient per example $h - y$;
# - **classification**: $y_n = \mathbb 1[x_n w^\star > 0]$ (linearly separable), log loss
#   $L = \frac1N \sum_n -y_n\log\sigma(h_n) - (1-y_n)\log(1-\sigma(h_n))$
#   (`F.sigmoid_cross_entropy`), true gradient per example $\sigma(h) - y$.
#
# The model is one `Linear(d, 1)` layer, $h = x\theta + b$ ($N\times 1$), started at zero. Its SG
# sits between $h$ and the loss and sees $z = [h, y]$ ($N\times 2$, the label as a number):
#
# - **linear SG**: `Synthesizer(Sequential([Linear(2, 1, init="zeros")]))`, i.e.
#   $M = hA + yB + C$ with scalars $A, B, C$ all starting at 0;
# - **sigmoid SG**: $M = w\,\sigma(ah + c) + yB' + C'$: a small layer `SigmoidGate` maps
#   $[h, y] \mapsto [\sigma(ah + c), y]$, then a zero-initialised `Linear(2, 1)`. It can represent
#   the log-loss gradient exactly ($a = w = 1$, $c = 0$, $B' = -1$, $C' = 0$), the linear SG
#   cannot.
#
# Each step: forward, the SG predicts $\hat\delta$, the layer updates from $\hat\delta$ (its own
# Adam), then the SG regresses onto the true $\delta$ of this step. Backprop runs the same loop
# with $\hat\delta = \delta$.
#
# First the sigmoid gate, as a forward/backward pair with its derivation. With $u = ah + c$ and
# $s = \sigma(u)$: $\bar u = \bar s\, s(1 - s)$, then $\bar h = a\bar u$,
# $\bar a = \sum_n \bar u_n h_n$, $\bar c = \sum_n \bar u_n$; the $y$ column passes through
# unchanged, so its gradient passes back unchanged. **Check 4** is `minidni.gradcheck` on it.

# %%
def sigmoid_gate_forward(z, a, c):
    """z (N, 1 + K) = [h, y] -> out (N, 1 + K) = [sigmoid(a h + c), y]; a, c of shape (1,)."""
    xp = get_xp(z, a, c)
    s, s_cache = F.sigmoid_forward(z[:, :1] * a + c)
    return xp.concatenate([s, z[:, 1:]], axis=1), (z[:, :1], a, s_cache)


def sigmoid_gate_backward(dout, cache):
    """Gradients (dz, da, dc) from dout (N, 1 + K)."""
    h_col, a, s_cache = cache
    xp = get_xp(dout)
    du = F.sigmoid_backward(dout[:, :1], s_cache)            # through sigma: dout * s (1 - s), (N, 1)
    dz = xp.concatenate([du * a, dout[:, 1:]], axis=1)       # du/dh = a; y passes straight through
    return dz, (du * h_col).sum(axis=0), du.sum(axis=0)      # du/da = h, du/dc = 1, summed over the batch


class SigmoidGate(Layer):
    """[h, y] -> [sigmoid(a h + c), y]; params a, c (1,), starting at a = 1, c = 0."""

    def __init__(self, dtype=np.float64):
        super().__init__()
        self.params = to_device({"a": np.ones(1, dtype), "c": np.zeros(1, dtype)})

    def forward(self, z, *, train=True):
        return sigmoid_gate_forward(z, self.params["a"], self.params["c"])

    def backward(self, dout, cache):
        dz, da, dc = sigmoid_gate_backward(dout, cache)
        return dz, {"a": da, "c": dc}


errors = check_pair(sigmoid_gate_forward, sigmoid_gate_backward,
                    [rng.standard_normal((7, 2)), rng.standard_normal(1), rng.standard_normal(1)],
                    names=["z", "a", "c"], elementwise=True)
print("sigmoid gate, largest relative errors:", {k: f"{v:.1e}" for k, v in errors.items()})

# %% [markdown]
# **Check 5: an exact SG reproduces backprop.** With $A = 1$, $B = -1$, $C = 0$ the linear SG
# *is* the MSE gradient $h - y$, and with $a = w = 1$, $c = 0$, $B' = -1$ the sigmoid SG is the
# log-loss gradient $\sigma(h) - y$. In the package's per-example units, `predict` must then
# return exactly the gradient that `F.mse` and `F.sigmoid_cross_entropy` return.

# %%
def make_sg(kind, lr, seed=0):
    """A zero-initialised SG on z = [h, y] (N, 2) -> (N, 1): kind "linear" or "sigmoid"."""
    rng_sg = np.random.default_rng(seed)
    head = [SigmoidGate()] if kind == "sigmoid" else []
    return Synthesizer(Sequential([*head, Linear(2, 1, rng=rng_sg, init="zeros", dtype=np.float64)]), lr=lr)


h_test = 2 * rng.standard_normal((8, 1))
y_reg, y_cls = rng.standard_normal((8, 1)), rng.integers(0, 2, (8, 1)).astype(np.float64)
oracle_lin, oracle_sig = make_sg("linear", 1e-3), make_sg("sigmoid", 1e-3)
for sg_exact in (oracle_lin, oracle_sig):
    sg_exact.net.layers[-1].params["W"][...] = to_device(np.array([[1.0], [-1.0]]))
pred_lin = to_numpy(oracle_lin.predict(to_device(np.concatenate([h_test, y_reg], axis=1)))[0])
pred_sig = to_numpy(oracle_sig.predict(to_device(np.concatenate([h_test, y_cls], axis=1)))[0])
assert np.allclose(pred_lin, F.mse(h_test, y_reg)[1], rtol=1e-12, atol=1e-15)
assert np.allclose(pred_sig, F.sigmoid_cross_entropy(h_test, y_cls)[1], rtol=1e-12, atol=1e-15)
print("an exact linear SG equals the MSE gradient; an exact sigmoid SG equals the log-loss gradient")

# %% [markdown]
# **The training loop.** Learning rates: Czarnecki et al. used Adam with rate $3\cdot10^{-5}$ for
# both the layer and its SG. Adam moves each weight by about the learning rate per step, so the
# distance travelled in weight space is about rate × steps: the normal mode here uses a 10 times
# larger rate, $3\cdot10^{-4}$, for 15 000 full-batch steps (the distance of 150 000 steps at
# their rate, in about a minute), the fast run (`MINIDNI_FAST=1`) a 100 times larger rate for
# 1 500 steps. The larger the rate, the noisier the run.

# %%
LR, STEPS = (3e-3, 1500) if FAST else (3e-4, 15_000)
RECORD = STEPS // 150                     # record the training loss every RECORD steps
DIMS = (2, 10, 100)
N_DATA = 256
print(f"Adam lr {LR:g}, {STEPS} full-batch steps, d in {DIMS}, N = {N_DATA}")


def make_data(d, task, seed=0):
    """x (N, d) Gaussian; y (N, 1): a noisy linear teacher ("mse") or its sign as 0/1 ("log")."""
    rng_data = np.random.default_rng([seed, d])
    x = rng_data.standard_normal((N_DATA, d))
    score = x @ rng_data.standard_normal((d, 1)) / np.sqrt(d)
    y = score + 0.1 * rng_data.standard_normal((N_DATA, 1)) if task == "mse" else (score > 0).astype(np.float64)
    return x, y


LOSSES = {"mse": F.mse, "log": F.sigmoid_cross_entropy}


def train(task, d, sg_kind):
    """Train Linear(d, 1) from zero by backprop (sg_kind None) or through an SG; return curve and parts."""
    x, y = to_device(make_data(d, task))  # the data enter the device here
    model = Linear(d, 1, rng=np.random.default_rng(0), init="zeros", dtype=np.float64)
    opt = Adam(model.params, lr=LR)
    sg = None if sg_kind is None else make_sg(sg_kind, LR)
    loss_fn, curve = LOSSES[task], []
    for step in range(STEPS):
        h, cache = model.forward(x)                   # (N, 1)
        loss, delta = loss_fn(h, y)                   # the true gradient dL/dh, (N, 1)
        if step % RECORD == 0:
            curve.append(float(loss))
        if sg is None:
            grad_h = delta
        else:
            grad_h, sg_cache = sg.predict(get_xp(h).concatenate([h, y], axis=1))   # used at once ...
            sg.fit(sg_cache, delta)                                          # ... trained on the target
        _, grads = model.backward(grad_h, cache)
        opt.step(grads)
    final = float(loss_fn(model.forward(x)[0], y)[0])
    return {"curve": np.array(curve), "final": final, "model": model, "sg": sg, "x": x, "y": y}


METHODS = {"mse": [("backprop", None), ("linear SG", "linear")],
           "log": [("backprop", None), ("linear SG", "linear"), ("sigmoid SG", "sigmoid")]}
runs = {}
start = time.perf_counter()
for task, methods in METHODS.items():
    for d in DIMS:
        for name, kind in methods:
            runs[task, d, name] = train(task, d, kind)
print(f"{len(runs)} runs in {time.perf_counter() - start:.0f} s")

# %% [markdown]
# **A small version of Czarnecki et al.'s Table 2**: final training loss of the SG-trained
# layer minus that of backprop, after the same number of steps (positive: the SG ends worse).

# %%
print(f"{'loss':<9}{'d':>5}{'backprop':>11}{'linear SG':>11}{'gap':>9}{'sigmoid SG':>12}{'gap':>9}")
gaps = {}
for task in METHODS:
    for d in DIMS:
        bp = runs[task, d, "backprop"]["final"]
        lin = runs[task, d, "linear SG"]["final"]
        gaps[task, d, "linear SG"] = lin - bp
        row = f"{task:<9}{d:>5}{bp:>11.4f}{lin:>11.4f}{lin - bp:>+9.4f}"
        if task == "log":
            sig = runs[task, d, "sigmoid SG"]["final"]
            gaps[task, d, "sigmoid SG"] = sig - bp
            row += f"{sig:>12.4f}{sig - bp:>+9.4f}"
        print(row)
print("Czarnecki et al. (their data and budget): gap ~0 for MSE, up to 0.086 for log loss")

assert all(np.isfinite(run["final"]) for run in runs.values())
assert max(abs(gaps["mse", d, "linear SG"]) for d in DIMS) < 0.01          # MSE: the SG gets there too
assert gaps["log", max(DIMS), "linear SG"] > 0.01                          # log loss: a real gap
assert gaps["log", max(DIMS), "sigmoid SG"] < 0.5 * gaps["log", max(DIMS), "linear SG"]

# %%
fig, axes = plt.subplots(2, len(DIMS), figsize=(13, 6.5), constrained_layout=True, sharex=True)
colors = {"backprop": "black", "linear SG": "tab:red", "sigmoid SG": "tab:blue"}
styles = {"backprop": "-", "linear SG": "--", "sigmoid SG": ":"}
for row, task in enumerate(METHODS):
    for col, d in enumerate(DIMS):
        ax = axes[row, col]
        for name, _ in METHODS[task]:
            curve = runs[task, d, name]["curve"]
            ax.plot(np.arange(len(curve)) * RECORD, curve, styles[name], color=colors[name], lw=2, label=name)
        ax.set(yscale="log", title=f"{'MSE' if task == 'mse' else 'log loss'}, d = {d}")
        ax.grid(alpha=0.3)
        if col == 0:
            ax.set_ylabel(f"training loss ({'squared units' if task == 'mse' else 'nats'})")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:g}k"))  # 150k, not 150000
        if row == 1:
            ax.set_xlabel(f"training step (k = thousand; Adam, lr {LR:g})")
        ax.legend(fontsize=8)
fig.suptitle("One linear layer trained by backprop or through a synthetic gradient (N = 256, full batch)")
nb.show(fig, "mse_vs_log_loss")

# %% [markdown]
# With MSE the linear SG follows backprop to the same loss (the wiggles are
# Adam noise on the SG at its large learning rate). With log loss the linear SG levels off while
# backprop keeps going down (the printed table gives the gaps of this run; at $d = 100$ the 256
# points are separable with a wide margin that backprop keeps exploiting). The sigmoid SG closes it. The next two
# sections show why.
#
# **Reading the gaps.** They are measured after a fixed number of steps, not at convergence:
# on log loss at $d = 2$ and $10$ backprop is still improving, and a small *negative* gap only
# means that the SG run is ahead at this budget. Adam contributes to that: its step is
# $\hat m/\sqrt{\hat v}$ with $v$ a slow running mean of $g^2$ (about 1000 steps for
# $\beta_2 = 0.999$). An SG starts at 0 and grows, so $v$ lags behind and the steps are larger
# than the learning rate; backprop's log-loss gradient shrinks, so its steps are smaller. The
# fast run, with a 100 times larger rate, shows this more strongly than the normal run. What does
# not depend on the budget is the linear SG's plateau at $d = 100$.
#
# ## 4. The surrogate against the true loss, along a line
#
# Take a trained linear SG, read off its scalars $A, B, C$ (per-example units) and evaluate the
# surrogate $L_{SG}(\theta) = \frac1N \sum_n \tfrac12 A h_n^2 + (By_n + C)h_n$ with
# $h = x\theta + b$. First **check 6**: its gradient at the trained point equals what the
# trained SG predicts. Then compare the surrogate with the true loss along a line
# $\theta(t) = \theta_0 + t\,(\theta_1 - \theta_0)$ (weights and bias together):
#
# - **MSE**: from the zero initialisation ($\theta_0 = 0$, $t = 0$) through the SG's final point
#   ($\theta_1 = \theta_{SG}$, $t = 1$) and beyond;
# - **log loss**: from the SG's final point ($t = 0$) towards **backprop's** final point ($t = 1$)
#   and beyond: the direction in which the true loss still falls, and the one the linear SG did
#   not take.
#
# A surrogate is defined only up to an additive constant (and, under Adam, a scale), so it is
# drawn minus its minimum, on its own axis.

# %%
def sg_coefficients(sg):
    """(A, B, C) of a trained linear SG on [h, y], in per-example units (host floats)."""
    W, b = to_numpy(sg.net.params["0.W"]), to_numpy(sg.net.params["0.b"])
    return float(W[0, 0]), float(W[1, 0]), float(b[0])


def model_point(run):
    """(W (d, 1), b (1,)) of a trained run's layer, on the host."""
    return np.array(to_numpy(run["model"].params["W"])), np.array(to_numpy(run["model"].params["b"]))


def line_losses(task, sg_run, start, end, ts):
    """True loss and the SG's surrogate along theta(t) = start + t (end - start); arrays of len(ts)."""
    A, B, C = sg_coefficients(sg_run["sg"])
    x, y = to_numpy(sg_run["x"]), to_numpy(sg_run["y"])
    true, surr = [], []
    for t in ts:
        W_t, b_t = start[0] + t * (end[0] - start[0]), start[1] + t * (end[1] - start[1])
        h_t = x @ W_t + b_t
        true.append(float(LOSSES[task](h_t, y)[0]))
        surr.append(float(np.mean(0.5 * A * h_t**2 + (B * y + C) * h_t)))
    return np.array(true), np.array(surr)


for key in [("mse", 10, "linear SG"), ("log", max(DIMS), "linear SG")]:
    run = runs[key]
    A, B, C = sg_coefficients(run["sg"])
    y_host = to_numpy(run["y"])
    h_final = run["model"].forward(run["x"])[0]
    predicted = to_numpy(run["sg"].predict(get_xp(h_final).concatenate([h_final, run["y"]], axis=1))[0])
    h_final = to_numpy(h_final)
    numeric = numerical_gradient(lambda hh: np.mean(0.5 * A * hh**2 + (B * y_host + C) * hh), h_final)
    assert np.allclose(numeric, predicted, rtol=1e-6, atol=1e-10)
    print(f"{key[0]:>4}, d = {key[1]:>3}: trained SG  A = {A:+.4f}, B = {B:+.4f}, C = {C:+.4f};"
          f" max |grad surrogate - SG| = {np.abs(numeric - predicted).max():.1e}")

# %% [markdown]
# **Exercise 2 (where the surrogate sends each example).** For one example of class $y$ the
# per-example surrogate is $\tfrac12 A h^2 + (By + C)h$. With $A > 0$, at which logit $h^\star$ is it
# lowest? Write it as a function of the trained SG's scalars. The check compares your $h^\star$
# with the logit at which the package's trained SG (log loss, $d = 100$) predicts a zero gradient
# (read off by evaluating `sg.predict` at two logits and solving the straight line for its zero).

# %%
def surrogate_minimiser(A, B, C, y):
    """The logit h* at which A h^2 / 2 + (B y + C) h is lowest (A > 0), for the class y (0 or 1)."""
    # TODO (exercise 2)
    raise NotImplementedError


def zero_of_trained_sg(A, B, C, y, sg=runs["log", max(DIMS), "linear SG"]["sg"]):
    """The logit where the package's trained SG predicts 0 for class y (it is linear in h)."""
    z = to_device(np.array([[0.0, y], [1.0, y]]))
    g0, g1 = to_numpy(sg.predict(z)[0])[:, 0]
    return -g0 / (g1 - g0)


A_log, B_log, C_log = sg_coefficients(runs["log", max(DIMS), "linear SG"]["sg"])
nb.grade("04.surrogate minimiser", surrogate_minimiser, against=zero_of_trained_sg, tol=1e-6,
         cases=[(A_log, B_log, C_log, 0.0), (A_log, B_log, C_log, 1.0)])

# %%
d_big = max(DIMS)
zero = (np.zeros((10, 1)), np.zeros(1))
LINES = [("mse", 10, zero, model_point(runs["mse", 10, "linear SG"]), np.linspace(0, 3, 301),
          r"$\theta(t) = t\,\theta_{SG}$ (0 = initialisation, 1 = end of SG training)", "MSE, d = 10"),
         ("log", d_big, model_point(runs["log", d_big, "linear SG"]), model_point(runs["log", d_big, "backprop"]),
          np.linspace(-0.5, 2, 251), r"$\theta(t) = \theta_{SG} + t\,(\theta_{bp} - \theta_{SG})$ (0 = SG's end, 1 = backprop's end)",
          f"log loss, d = {d_big}: towards backprop's solution")]
fig, axes = plt.subplots(1, 2, figsize=(13, 4.6), constrained_layout=True)
for ax, (task, d, start, end, ts, xlabel, title) in zip(axes, LINES):
    true, surr = line_losses(task, runs[task, d, "linear SG"], start, end, ts)
    t_true, t_surr = ts[np.argmin(true)], ts[np.argmin(surr)]
    ax.plot(ts, true, color="black", lw=2, label=r"true loss $L(t)$ (left axis)")
    ax.axvline(t_true, color="black", lw=1, ls="-.", label=f"lowest true loss on the line, t = {t_true:.2f}")
    ax.axvline(t_surr, color="tab:red", lw=1, ls=":", label=f"minimum of the surrogate, t = {t_surr:.2f}")
    ax.set(xlabel=xlabel, ylabel=f"true loss ({'squared units' if task == 'mse' else 'nats'}, log scale)",
           yscale="log", title=title)
    twin = ax.twinx()
    twin.plot(ts, surr - surr.min(), color="tab:red", lw=2, ls="--", label=r"surrogate $L_{SG}(t) - \min L_{SG}$ (right axis)")
    twin.set_ylabel("surrogate minus its minimum (same units)", color="tab:red")
    twin.tick_params(axis="y", colors="tab:red")
    ax.grid(alpha=0.3)
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize=8, loc="upper center")
    at = {t_: float(true[np.argmin(np.abs(ts - t_))]) for t_ in (0.0, 1.0)}
    print(f"{title}: true loss at t = 0: {at[0.0]:.4f}, at t = 1: {at[1.0]:.4f}, lowest on the line {true.min():.4f} "
          f"at t = {t_true:.2f}; surrogate lowest at t = {t_surr:.2f}")
    if task == "log":
        log_line = dict(true_at_sg=at[0.0], true_at_bp=at[1.0], t_true=t_true, t_surr=t_surr)
fig.suptitle("Linear SG: the layer descends a quadratic surrogate (red), not the true loss (black)")
nb.show(fig, "surrogate_along_line")
assert log_line["true_at_bp"] < log_line["true_at_sg"]  # backprop's point is lower on the true loss ...
assert abs(log_line["t_surr"]) < 0.25                   # ... while the surrogate says stop near the SG's point

# %% [markdown]
# For MSE the surrogate is (up to scale and constant) the true loss: with $B = -A$ it reads
# $\tfrac12 A (h - y)^2 - \tfrac12 A y^2$, and both are lowest near $t = 1$, where training ended
# (the printed $t$ values). For log loss the surrogate is a parabola in every $h_n$ with its bottom
# at a *finite* target logit for each class (exercise 2), and training ended at (or, in the
# short fast run, near) its minimum: on the right panel the surrogate is lowest near $t = 0$, the
# SG's end point. The true loss disagrees: it keeps falling from there towards backprop's solution
# (printed: its value at $t = 0$ against $t = 1$), because making the right examples more
# confident still pays. The SG says "stop" where the true loss says "keep going", and the
# shortfall is one of **direction**: the surrogate's gradient is zero at the SG's point while
# the true gradient there points towards backprop's solution.
#
# ## 5. Why a linear SG cannot follow log loss, and the sigmoid fix
#
# The true per-example gradient of log loss is $\sigma(h) - y$: for $y = 1$ it is $-1$ for very
# negative $h$ and $0$ for large $h$, a smooth step. A linear SG fits a straight line through
# this step for each class; a sigmoid SG fits the step itself. Below: the three gradients as
# functions of $h$ (per example) at the end of training, with the distribution of the trained
# model's outputs $h_n$ underneath.

# %%
outputs = {}  # (SG kind, class) -> the trained layer's outputs h_n of that class, on the host
for name in ("linear SG", "sigmoid SG"):
    run = runs["log", d_big, name]
    h_all, y_all = to_numpy(run["model"].forward(run["x"])[0]), to_numpy(run["y"])
    for label in (0.0, 1.0):
        outputs[name, label] = h_all[y_all == label]
span = max(15.0, float(np.ceil(max(np.abs(v).max() for v in outputs.values()))))  # every output inside the axes
grid = np.linspace(-span, span, 301)[:, None]
fig, axes = plt.subplots(2, 2, figsize=(12, 6), constrained_layout=True, sharex=True,
                         gridspec_kw={"height_ratios": [3, 1]})
for col, label in enumerate((0.0, 1.0)):
    ax = axes[0, col]
    ax.plot(grid, F.sigmoid(grid) - label, color="black", lw=2.5, label=r"true $\sigma(h) - y$")
    for name in ("linear SG", "sigmoid SG"):
        sg_trained = runs["log", d_big, name]["sg"]
        z = to_device(np.concatenate([grid, np.full_like(grid, label)], axis=1))
        ax.plot(grid, to_numpy(sg_trained.predict(z)[0]) * len(grid), styles[name], color=colors[name], lw=2,
                label=f"{name} (trained)")
    ax.set(ylabel=r"gradient per example $\partial \ell / \partial h$", title=f"class y = {int(label)}",
           ylim=(-1.3, 1.3))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    for name in ("linear SG", "sigmoid SG"):
        axes[1, col].hist(outputs[name, label], bins=60, range=(-span, span), histtype="step", color=colors[name],
                          lw=2, label=f"trained with {name}")
    axes[1, col].set(xlabel=f"layer output h (logit; the axis spans every output, |h| up to {span:g})",
                     ylabel="examples")
    axes[1, col].legend(fontsize=8)
fig.suptitle(f"Log loss, d = {d_big}: the true gradient is step-like; a linear SG is a straight line")
nb.show(fig, "sg_vs_true_gradient")

# %% [markdown]
# The linear SG is a compromise line that is wrong almost everywhere: it pushes every example
# towards its class's zero crossing, a finite logit, and does not know that examples far on the
# right side need no push at all; some examples end on the wrong side of 0. The sigmoid SG
# has the shape of the true curve, a step at the right place, so the layer gets the true
# gradient's direction and trains like backprop. Its height can differ from the true one (the
# regression had not finished scaling it up when training ended): the layer's Adam divides its
# steps by the running size of the gradient, so a consistently scaled gradient gives the same
# steps.
#
# ## 6. A spurious critical point
#
# Czarnecki et al.'s toy: four points $x \in \{-2, -1, 1, 2\}$, a model $h = ax + b$, the loss
# $L(a, b) = \sum_x |ax + b|$ (minimum 0 at $a = b = 0$), and the simplest SG of all, a
# constant $M = c$ (no dependence on $h$ or $x$), trained by regression onto the true gradient
# $\partial|h|/\partial h = \operatorname{sign}(h)$. The joint dynamics of $(a, b, c)$ with
# step sizes $\alpha$ (model) and $\beta$ (SG):
#
# $$a \leftarrow a - \alpha \sum_x c\,x = a, \qquad b \leftarrow b - \alpha \sum_x c = b - 4\alpha c,
# \qquad c \leftarrow c - \beta \sum_x \big(c - \operatorname{sign}(ax + b)\big).$$
#
# Since $\sum_x x = 0$, **$a$ never moves**. A point is critical for the joint system when
# $c = 0$ and $\sum_x \operatorname{sign}(ax + b) = 0$. At $b = 0$ the signs of $a\cdot\{-2,-1,1,2\}$
# cancel, so **every $(a, 0, 0)$ is critical**; in fact every $(a, b, 0)$ with $|b| < |a|$ is
# (the signs are $-,-,+,+$ for $a > 0$). But the true gradient there is
# $\partial L/\partial a = \sum_x x\operatorname{sign}(ax + b) = 6\operatorname{sign}(a)$ and
# $\partial L/\partial b = 0$, and the loss is $6|a| > 0$: not a critical point of the true loss.
# The constant SG cannot represent a gradient that depends on the example, so its best fit (the
# average sign, 0) tells the model nothing.
#
# **Check 7**: the joint update vanishes on the whole line $(a, 0, 0)$, while finite differences
# of the true loss give $(6\operatorname{sign} a, 0)$ there.

# %%
X_TOY = np.array([-2.0, -1.0, 1.0, 2.0])


def toy_loss(params):
    """L(a, b) = sum_x |a x + b|; params = [a, b]."""
    return np.abs(params[0] * X_TOY + params[1]).sum()


def toy_sg_update(a, b, c):
    """Directions (da, db, dc) of the joint SG dynamics: model step from the SG c, SG step towards sign(h)."""
    h_toy = a * X_TOY + b
    return (c * X_TOY).sum(), c * len(X_TOY), (c - np.sign(h_toy)).sum()


for a in [-3.0, -0.7, 0.4, 1.0, 2.5]:
    update = tuple(float(u) for u in toy_sg_update(a, 0.0, 0.0))
    true_grad = numerical_gradient(toy_loss, np.array([a, 0.0]))
    assert update == (0.0, 0.0, 0.0)
    assert np.allclose(true_grad, [6 * np.sign(a), 0.0], rtol=1e-6)
    print(f"a = {a:+.1f}: SG update {update}; true gradient (dL/da, dL/db) = {true_grad.round(6)}; loss {toy_loss([a, 0]):.1f}")

# %% [markdown]
# **Tiny run.** Gradient descent from a few starting points, with the SG (joint dynamics above,
# $c$ starting at 0) and with the true (sub)gradient (backprop), $\alpha = \beta = 0.01$.

# %%
TOY_STEPS, ALPHA, BETA = 400, 0.01, 0.01
starts = [(1.5, 2.5), (-1.0, 2.0), (2.0, -3.0), (-2.5, -3.0), (0.5, -1.5), (-0.6, 0.2)]


def toy_run(a, b, use_sg):
    path, c = [(a, b, 0.0)], 0.0
    for _ in range(TOY_STEPS):
        if use_sg:
            da, db, dc = toy_sg_update(a, b, c)
            a, b, c = a - ALPHA * da, b - ALPHA * db, c - BETA * dc
        else:
            h_toy = a * X_TOY + b
            a, b = a - ALPHA * (np.sign(h_toy) * X_TOY).sum(), b - ALPHA * np.sign(h_toy).sum()
        path.append((a, b, c))
    return np.array(path)


paths = {(s, use_sg): toy_run(*s, use_sg) for s in starts for use_sg in (True, False)}
for s in starts:
    a_end, b_end, c_end = paths[s, True][-1]
    print(f"start (a, b) = {s}: with SG -> a = {a_end:+.3f}, b = {b_end:+.3f}, c = {c_end:+.1e} "
          f"(loss {toy_loss([a_end, b_end]):.2f}); backprop -> loss {toy_loss(paths[s, False][-1][:2]):.2f}")
    assert a_end == s[0] and abs(c_end) < 1e-3 and abs(b_end) < abs(a_end)   # stuck in the spurious set

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 6.2), constrained_layout=True)
ag, bg = np.meshgrid(np.linspace(-3.2, 3.2, 161), np.linspace(-3.2, 3.2, 161))
loss_grid = np.abs(ag[..., None] * X_TOY + bg[..., None]).sum(-1)
contours = ax1.contour(ag, bg, loss_grid, levels=[4, 8, 12, 18], colors="darkgray", linewidths=1)
ax1.clabel(contours, fontsize=9, fmt="L = %d", inline=True, inline_spacing=2, colors="dimgray")
wedge_a = np.array([-3.2, 0.0, 3.2])
ax1.fill_between(wedge_a, -np.abs(wedge_a), np.abs(wedge_a), color="tab:red", alpha=0.12,
                 label=r"critical for the SG dynamics ($|b| < |a|$, $c = 0$)")
ax1.axhline(0, color="tab:red", lw=1.5, label=r"the line $(a, 0, 0)$")
for i, s in enumerate(starts):
    sg_path, bp_path = paths[s, True], paths[s, False]
    ax1.plot(sg_path[:, 0], sg_path[:, 1], color="tab:red", lw=2, label="trained with the SG" if i == 0 else None)
    ax1.plot(bp_path[:, 0], bp_path[:, 1], color="black", lw=1.5, ls="--", label="trained by backprop" if i == 0 else None)
    ax1.plot(*s, "o", color="tab:green", ms=7, label="start" if i == 0 else None)
    ax1.plot(*sg_path[-1, :2], "x", color="tab:red", ms=9, mew=2, label="end of the SG run" if i == 0 else None)
ax1.plot(0, 0, "*", color="black", ms=12, label="true minimum (0, 0)")
ax1.set(xlabel="slope a", ylabel="offset b", title=r"Paths in $(a, b)$; grey: contours of $L = \sum_x |ax+b|$",
        xlim=(-3.2, 3.2), ylim=(-3.2, 3.2))
ax1.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)
steps_axis = np.arange(TOY_STEPS + 1)
for i, s in enumerate(starts):
    ax2.plot(steps_axis, [toy_loss(p[:2]) for p in paths[s, True]], color="tab:red", lw=2,
             label="with the SG" if i == 0 else None)
    ax2.plot(steps_axis, [toy_loss(p[:2]) for p in paths[s, False]], color="black", lw=1.5, ls="--",
             label="backprop" if i == 0 else None)
ax2.set(xlabel=f"training step (alpha = beta = {ALPHA})", ylabel=r"true loss $\sum_x |ax + b|$",
        title="The SG runs stop at loss 6|a| > 0; backprop reaches ~0", ylim=(0, None))
ax2.grid(alpha=0.3)
ax2.legend()
nb.show(fig, "spurious_critical_points")

# %% [markdown]
# Every SG path moves only vertically (the slope $a$ is frozen), enters the wedge $|b| < |a|$,
# and stops there as $c$ decays to 0, at a true loss of $6|a|$. Backprop goes to the minimum
# (and chatters around it with an amplitude set by the step size, as subgradient descent on
# $|\cdot|$ does).
#
# ## Summary
#
# - A linear SG $hA + yB + C$ with symmetric $A$ is exactly the gradient of the quadratic
#   surrogate $\tfrac12 hAh^\top + (yB + C)h^\top$ (checked against finite differences and the
#   package's `mlp_synthesizer(hidden=0)`); the layers below descend this surrogate. With a
#   non-symmetric $A$ the SG has a rotational part $hK$ and nonzero circulation
#   $\pi r^2(A_{ij} - A_{ji})$: it is the gradient of no loss at all.
# - When the true gradient is linear in $h$ (MSE), the SG can represent it and the SG-trained
#   layer ends where backprop does (gap $\approx 0$). With log loss on separable data the
#   surrogate is lowest at the SG's end point while the true loss keeps falling towards
#   backprop's solution: the SG's shortfall is one of direction, and training stalls (the gaps in
#   the table above; Czarnecki et al. report up to 0.086 on their data). A sigmoid SG can follow
#   the step-like gradient and closes most of the gap.
# - An SG can also *add* critical points: with a constant SG on the $|ax+b|$ toy, every
#   $(a, 0, 0)$ (indeed every $(a, b, 0)$ with $|b| < |a|$) is a fixed point of training while
#   the true gradient is $(6\operatorname{sign} a, 0)$.
#
# ## More exercises (no grader)
#
# Exercises 1 and 2 above are graded by their check cells. Further questions:
#
# 1. Train a *non-symmetric* linear SG: give the layer two outputs ($h$ is $N\times 2$, SG
#    `Linear(3, 2)`) on a two-output regression and inspect the learned $A$. Is it symmetric?
#    Compute $A_{01} - A_{10}$ during training.
# 2. In Section 3, start `SigmoidGate` at a random $a \sim \mathcal N(0, 1)$ instead of $a = 1$.
#    Does the sigmoid SG still close the gap? (Hint: with $a < 0$, show that
#    $w = -1$, $C' = 1$, $B' = -1$ still represents $\sigma(h) - y$.)
# 3. Repeat the table with more steps for backprop only. Which number in the table depends on
#    the training budget, and which does not? Why does the gap for log loss grow with $d$?
# 4. Give the toy's SG access to $h$: $M = \lambda h + c$. Which points are critical now? Does
#    training still stop at $(a, 0, \cdot)$ with $a \ne 0$?
# 5. Derive the surrogate for an SG with one hidden layer, $M = \mathrm{relu}(hU)V$. When is
#    it a gradient field? (Compute its Jacobian.)
