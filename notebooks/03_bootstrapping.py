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
# # 3. Bootstrapping: synthetic gradients for recurrent networks
#
# **Goal.** A recurrent network trained on an endless stream (characters, Copy episodes, ...)
# cannot backpropagate through all of its past: in practice the stream is cut into *windows* of
# $T$ steps and the gradient is stopped at each window's edge (**truncated BPTT**). Whatever
# the network would have to learn about dependencies longer than $T$ is lost. Jaderberg et al.
# put a synthetic gradient at the window's edge: a small model $M$ predicts the gradient that
# the future would send back, and learns it from a **bootstrapped** target. In this notebook we
#
# 1. derive truncated BPTT as the full gradient with **one term dropped**, and check it with the
#    package's LSTM ops (`minidni.functional.lstm_forward` / `lstm_backward`),
# 2. derive the bootstrapped target of $M$ and check it against a longer BPTT, and check that the
#    package's trainer (`minidni.dni.RecurrentTrainer`) computes exactly that target,
# 3. train an LSTM on **Copy** with the curriculum, by truncated BPTT, DNI and DNI + Aux, and plot
#    how far each gets, with the synthetic gradients' diagnostics.
#
# `MINIDNI_FAST=1` shrinks the runs (same code), as in the test suite.

# %%
import os
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter

import minidni.functional as F
from minidni.dni.recurrent import RecurrentTrainer, copy_loss
from minidni.gradcheck import adjoint_check, numerical_gradient
from minidni.io import save_figure
from minidni.layers import Linear
from minidni.tasks import CopyTaskStream, Curriculum, EpisodeScorer
from minidni.tasks.copy import IN_CHANNELS, OUT_CHANNELS

FAST = os.environ.get("MINIDNI_FAST") == "1"
ROOT = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "minidni" / "__init__.py").exists())
FIGURE_DIR = Path(os.environ.get("MINIDNI_FIGURE_DIR", ROOT / "figures"))
print(f"fast mode: {FAST}; repository: {ROOT}")


def show(fig, name):
    """Display a figure; in full mode (or with MINIDNI_FIGURE_DIR set) also save it as a PNG."""
    if not FAST or "MINIDNI_FIGURE_DIR" in os.environ:
        save_figure(fig, FIGURE_DIR / f"notebook_03_{name}.png")
    plt.show()


# %% [markdown]
# ## 1. Notation and shapes
#
# An LSTM core with parameters $\theta = (W_x, W_h, b)$ reads an input $x_t$ and updates its
# state $s_t = (h_t, c_t)$, two $B\times H$ arrays for a batch of $B$ streams:
#
# $$s_t = f(s_{t-1}, x_t;\,\theta), \qquad \text{logits}_t = h_t W_o + b_o, \qquad
# L_t = \ell(\text{logits}_t, y_t).$$
#
# Arrays are time-major: a window of inputs is $x \in \mathbb{R}^{T\times B\times D}$, its hidden
# states $h \in \mathbb{R}^{T\times B\times H}$, its logits $T\times B\times C$. The loss of a window
# is the package's `copy_loss`: the per-step sigmoid cross-entropy summed over steps and output
# channels and averaged over the batch, so the losses of consecutive windows simply add up.
#
# We write $\delta_t = \partial \mathcal L_{\ge t}/\partial s_t$ for the gradient of **all future
# losses** $\mathcal L_{\ge t} = \sum_{\tau \ge t} L_\tau$ with respect to the state (the pair
# $(\partial/\partial h_t, \partial/\partial c_t)$, $B\times 2H$). The package's `lstm_backward`
# takes the gradients arriving at every hidden state, `dhs` $(T, B, H)$, and the one arriving at
# the final cell state, `dcT` $(B, H)$, and returns among others `dh0, dc0`: the gradient at the
# window's first state.
#
# ## 2. Truncated BPTT drops one term
#
# **Derivation.** Give each window its own copy of the parameters, $\theta^{(0)}$ for steps
# $0..T-1$, $\theta^{(1)}$ for $T..2T-1$, and so on, all with the same values; the gradient with
# respect to the shared $\theta$ is the sum over the copies. Window 0's copy influences the losses
# *inside* the window directly, and every later loss only **through the state $s_T$ it hands
# on**. The chain rule therefore splits its gradient in exactly two parts:
#
# $$\frac{\partial \mathcal L_{\ge 0}}{\partial \theta^{(0)}}
# = \underbrace{\sum_{\tau=0}^{T-1} \frac{\partial L_\tau}{\partial \theta^{(0)}}}_{\text{inside the window}}
# \;+\; \underbrace{\delta_T\, \frac{\partial s_T}{\partial \theta^{(0)}}}_{\text{the future, through } s_T},
# \qquad \delta_T = \frac{\partial \mathcal L_{\ge T}}{\partial s_T}.$$
#
# - **Truncated BPTT** sets $\delta_T = 0$: it keeps the first term and drops the second.
# - **Full BPTT** would need $\delta_T$ exactly, i.e. the forward and backward pass of the whole
#   future stream before window 0 could update: the window is *backward locked* on the future.
# - **DNI** uses $\hat\delta_T = M(s_T)$, available as soon as $s_T$ is: in the backward pass of
#   window 0 it is simply added to the gradient arriving at $h_T$ (`dhs[-1]`) and passed as the
#   gradient at $c_T$ (`dcT`).
#
# **Check 1: chaining windows is BPTT.** Run two windows; feed window 1's first-state
# gradient `(dh0, dc0)` into window 0's backward as `(dhs[-1] += dh0, dcT = dc0)`. The sum of both
# windows' parameter gradients must equal a single BPTT through all $2T$ steps (float64).

# %%
T, B, D, H, C = 3, 4, 5, 6, 3
rng = np.random.default_rng(0)
Wx = 0.4 * rng.standard_normal((D, 4 * H))
Wh = 0.4 * rng.standard_normal((H, 4 * H))
b = 0.1 * rng.standard_normal(4 * H)
Wo, bo = 0.5 * rng.standard_normal((H, C)), np.zeros(C)
xs = rng.standard_normal((3 * T, B, D))                        # three windows of inputs
ys = (rng.random((3 * T, B, C)) > 0.5).astype(np.float64)       # and 0/1 targets
ones = np.ones((3 * T, B))                                       # every step is scored
h_start, c_start = 0.1 * rng.standard_normal((B, H)), 0.1 * rng.standard_normal((B, H))
WINDOW = [slice(k * T, (k + 1) * T) for k in range(3)]


def run_window(steps, h0, c0, dh_end=None, dc_end=None, params=(Wx, Wh, b)):
    """Forward and backward over the steps `steps` (a slice) from state (h0, c0).

    dh_end, dc_end (B, H): gradients injected at the last state (from the future or an SG).
    Returns the final state, the loss and every gradient of the window.
    """
    x, y, mask = xs[steps], ys[steps], ones[steps]
    n = x.shape[0]
    hs, cT, cache = F.lstm_forward(x, h0, c0, *params)
    logits, head_cache = F.linear_forward(hs.reshape(n * B, H), Wo, bo)
    loss, dlogits, _ = copy_loss(logits.reshape(n, B, C), y, mask)
    dflat, _, _ = F.linear_backward(dlogits.reshape(n * B, C), head_cache)
    dhs = dflat.reshape(n, B, H)
    if dh_end is not None:
        dhs[-1] += dh_end
    _, dh0, dc0, dWx, dWh, db = F.lstm_backward(dhs, dc_end, cache)
    return {"h": hs[-1].copy(), "c": cT.copy(), "loss": float(loss), "dh0": dh0, "dc0": dc0,
            "grads": {"Wx": dWx, "Wh": dWh, "b": db}}


first = run_window(WINDOW[0], h_start, c_start)                      # forward of window 0 (truncated)
second = run_window(WINDOW[1], first["h"], first["c"])               # window 1 from the carried state
chained = run_window(WINDOW[0], h_start, c_start, second["dh0"], second["dc0"])   # with delta_T injected
bptt_2T = run_window(slice(0, 2 * T), h_start, c_start)              # one BPTT over 2T steps

assert np.isclose(bptt_2T["loss"], first["loss"] + second["loss"], rtol=1e-13)
for name in ("Wx", "Wh", "b"):
    total = chained["grads"][name] + second["grads"][name]
    assert np.allclose(total, bptt_2T["grads"][name], rtol=1e-10, atol=1e-13), name
    print(f"d{name}: max |window 0 (with delta_T) + window 1 - BPTT over 2T| = {np.abs(total - bptt_2T['grads'][name]).max():.1e}")

# %% [markdown]
# **Check 2: truncation drops exactly $\delta_T\,\partial s_T/\partial\theta$.** Backprop is linear
# in the gradient that enters it, so the difference between window 0's gradients with and
# without $\delta_T$ must be the backward of $\delta_T$ alone (no losses), and that must be the
# gradient of $\langle \delta_T, s_T(\theta)\rangle$, which we test independently with
# `minidni.gradcheck.adjoint_check` (central differences along random directions).

# %%
delta_h, delta_c = second["dh0"], second["dc0"]                      # delta_T, (B, H) each
dropped = {k: chained["grads"][k] - first["grads"][k] for k in ("Wx", "Wh", "b")}
hs0, _, cache0 = F.lstm_forward(xs[WINDOW[0]], h_start, c_start, Wx, Wh, b)
only_delta = np.zeros_like(hs0)
only_delta[-1] = delta_h
_, _, _, *term = F.lstm_backward(only_delta, delta_c, cache0)        # delta_T ds_T/dtheta
for name, g in zip(("Wx", "Wh", "b"), term):
    assert np.allclose(dropped[name], g, rtol=1e-10, atol=1e-13), name
    print(f"d{name}: max |(with delta_T) - (truncated) - backward of delta_T alone| = {np.abs(dropped[name] - g).max():.1e}")


def final_state(Wx_, Wh_, b_):
    hs_, cT_, _ = F.lstm_forward(xs[WINDOW[0]], h_start, c_start, Wx_, Wh_, b_)
    return hs_[-1], cT_


errors = adjoint_check(final_state, [Wx, Wh, b], term, (delta_h, delta_c), names=["Wx", "Wh", "b"])
print("adjoint check of delta_T ds_T/dtheta, relative errors:", {k: f"{v:.1e}" for k, v in errors.items()})
norm = lambda g: np.sqrt(sum((v * v).sum() for v in g.values()))  # noqa: E731
print(f"|kept term| = {norm(first['grads']):.3f}, |dropped term| = {norm(dropped):.3f} (norms over Wx, Wh, b)")

# %% [markdown]
# ## 3. The bootstrapped target
#
# **Derivation.** $M$ must learn to output $\delta_T$, but $\delta_T$ depends on the whole future.
# Apply the same split one window further:
#
# $$\delta_T = \frac{\partial \mathcal L_{\ge T}}{\partial s_T}
# = \sum_{\tau=T}^{2T-1}\frac{\partial L_\tau}{\partial s_T} + \delta_{2T}\,\frac{\partial s_{2T}}{\partial s_T}.$$
#
# The first term is known once window 1 has run; $\delta_{2T}$ is as unknown as $\delta_T$ was, so
# it is replaced by the SG's own prediction at the next edge, $\hat\delta_{2T} = M(s_{2T})$:
#
# $$\text{target}(\hat\delta_T) = \sum_{\tau=T}^{2T-1}\frac{\partial L_\tau}{\partial s_T}
# + \hat\delta_{2T}\,\frac{\partial s_{2T}}{\partial s_T}.$$
#
# This is **exactly what window 1's backward returns at its first state**, `(dh0, dc0)`, when
# window 1 is trained with its own synthetic gradient injected at its end: the target costs
# nothing extra. Like a temporal-difference target in reinforcement learning ("reward +
# value of the next state"), it mixes one window of real information with the model's own
# guess about the rest. Its error is the SG's error at the next edge, pushed back through one
# window:
#
# $$\text{target} - \delta_T = (\hat\delta_{2T} - \delta_{2T})\,\frac{\partial s_{2T}}{\partial s_T}.$$
#
# **Check 3** (three windows, functional ops). (a) With an *oracle* SG at $s_{2T}$ (the true
# gradient of window 2's losses, and no future beyond window 2), the bootstrapped target equals
# the gradient at $s_T$ of a two-window BPTT over windows 1 and 2. (b) With an imperfect SG (a
# random linear $M$), target minus truth is the backward of the SG's error alone.

# %%
s1 = run_window(WINDOW[1], first["h"], first["c"])            # window 1 forward (state s_T in, s_2T out)
third = run_window(WINDOW[2], s1["h"], s1["c"])               # window 2: its dh0, dc0 is the true delta_2T
oracle_target = run_window(WINDOW[1], first["h"], first["c"], third["dh0"], third["dc0"])
two_window_bptt = run_window(slice(T, 3 * T), first["h"], first["c"])
assert np.allclose(oracle_target["dh0"], two_window_bptt["dh0"], rtol=1e-10, atol=1e-13)
assert np.allclose(oracle_target["dc0"], two_window_bptt["dc0"], rtol=1e-10, atol=1e-13)
gap_a = max(np.abs(oracle_target[k] - two_window_bptt[k]).max() for k in ("dh0", "dc0"))
print(f"(a) bootstrapped target with an oracle SG vs gradient at s_T of BPTT over windows 1 and 2: "
      f"max |diff| = {gap_a:.1e} (entries up to {np.abs(two_window_bptt['dc0']).max():.2f})")

M = 0.3 * rng.standard_normal((2 * H, 2 * H))                  # an imperfect linear SG on [h; c]
sg_pred = np.concatenate([s1["h"], s1["c"]], axis=1) @ M       # delta_hat_2T, (B, 2H)
boot = run_window(WINDOW[1], first["h"], first["c"], sg_pred[:, :H], sg_pred[:, H:])
error_h, error_c = sg_pred[:, :H] - third["dh0"], sg_pred[:, H:] - third["dc0"]
hs1, _, cache1 = F.lstm_forward(xs[WINDOW[1]], first["h"], first["c"], Wx, Wh, b)
only_error = np.zeros_like(hs1)
only_error[-1] = error_h
_, pushed_h, pushed_c, *_ = F.lstm_backward(only_error, error_c, cache1)
assert np.allclose(boot["dh0"] - two_window_bptt["dh0"], pushed_h, rtol=1e-9, atol=1e-12)
assert np.allclose(boot["dc0"] - two_window_bptt["dc0"], pushed_c, rtol=1e-9, atol=1e-12)
gap_b = max(np.abs(boot["dh0"] - two_window_bptt["dh0"] - pushed_h).max(),
            np.abs(boot["dc0"] - two_window_bptt["dc0"] - pushed_c).max())
print(f"(b) max |(target - truth) - (SG error pushed back one window)| = {gap_b:.1e}")
ratio = np.linalg.norm(np.concatenate([pushed_h, pushed_c])) / np.linalg.norm(np.concatenate([error_h, error_c]))
print(f"(b) target - truth == SG error pushed back one window; here the push shrinks it by {ratio:.2f}x")

# %% [markdown]
# **Check 4: the package's trainer uses this target.** `RecurrentTrainer` (read its module
# docstring) keeps $M$ in *per-example* units: it predicts $p = B\,\hat\delta$ from
# $[h_T; c_T]$, injects $\sigma\, p / B$ with a scale $\sigma$ = `sg_scale` (default 0.1, as public
# implementations do), and regresses $p$ onto $B\cdot$`(dh0, dc0)` of the next window. With the
# scale the target is $B\big(\sum_{\text{window}} \partial L/\partial s + \sigma\,\hat\delta_{2T}\,
# \partial s_{2T}/\partial s_T\big)$, so unrolling it, $M$ learns a *discounted* sum of future
# windows' gradients with discount $\sigma$ per window.
#
# We train two windows with plain SGD (float64, no clipping, random nonzero $M$), compute what $M$'s
# update after the second window must be from the derivation (its target from our own
# `lstm_forward`/`lstm_backward` on the second window, with the trainer's current weights), and
# compare with what the trainer did: $M \leftarrow M - \eta\, s^\top (sM + m - \text{target}) / B$.

# %%
trainer = RecurrentTrainer(D, C, H, mode="dni", lr=0.05, sg_lr=0.02, sg_scale=0.1, clip=0.0, reset="never",
                           optimizer="sgd", rng=np.random.default_rng(1), dtype=np.float64)
trainer.sg.params["W"][...] = 0.2 * rng.standard_normal((2 * H, 2 * H))   # nonzero M, so the check has teeth
trainer.sg.params["b"][...] = 0.1 * rng.standard_normal(2 * H)


def copy_window_loss(k):
    return lambda logits: copy_loss(logits, ys[WINDOW[k]], ones[WINDOW[k]])


trainer.train_window(xs[WINDOW[0]], copy_window_loss(0))
s_T = np.concatenate(trainer.state, axis=1)                          # [h_T; c_T] carried to window 1
M_W, M_b = trainer.sg.params["W"].copy(), trainer.sg.params["b"].copy()
lstm_p, head_p = (trainer.lstm.params[k].copy() for k in ("Wx", "Wh", "b")), trainer.head.params

# our own computation of window 1, with the trainer's weights at that moment
hs_1, cT_1, cache_1 = F.lstm_forward(xs[WINDOW[1]], *trainer.state, *lstm_p)
logits_1, head_cache_1 = F.linear_forward(hs_1.reshape(T * B, H), head_p["W"], head_p["b"])
_, dlogits_1, _ = copy_loss(logits_1.reshape(T, B, C), ys[WINDOW[1]], ones[WINDOW[1]])
dhs_1 = F.linear_backward(dlogits_1.reshape(T * B, C), head_cache_1)[0].reshape(T, B, H)
p_2T = np.concatenate([hs_1[-1], cT_1], axis=1) @ M_W + M_b          # M's per-example SG at s_2T
dhs_1[-1] += 0.1 * p_2T[:, :H] / B                                  # inject sigma p / B
_, dh0_1, dc0_1, *_ = F.lstm_backward(dhs_1, 0.1 * p_2T[:, H:] / B, cache_1)
target = B * np.concatenate([dh0_1, dc0_1], axis=1)                  # bootstrapped target, per example
err = s_T @ M_W + M_b - target
expected_W, expected_b = M_W - 0.02 * s_T.T @ err / B, M_b - 0.02 * err.sum(0) / B

trainer.train_window(xs[WINDOW[1]], copy_window_loss(1))            # the trainer fits M on window 1's target
assert np.allclose(trainer.sg.params["W"], expected_W, rtol=1e-10, atol=1e-13)
assert np.allclose(trainer.sg.params["b"], expected_b, rtol=1e-10, atol=1e-13)
gap_M = max(np.abs(trainer.sg.params["W"] - expected_W).max(), np.abs(trainer.sg.params["b"] - expected_b).max())
print(f"trainer's M after window 1 == derived update (max diff {gap_M:.1e});"
      f" |p| / |target| = {np.linalg.norm(s_T @ M_W + M_b) / np.linalg.norm(target):.2f} for this random M")

# %% [markdown]
# ## 4. DNI + Aux
#
# DNI + Aux (Jaderberg et al.) adds one auxiliary task: at the *start* of each window, the core's
# first hidden state $h_1$ (after the window's first step) feeds a linear head $A$ that predicts
# the synthetic gradient $p$ that $M$ will output at the *end* of the same window, $T$ steps
# later. Its loss, with weight $\lambda$ (`aux_weight`, default 0.1; the paper's value was not
# recovered),
#
# $$L_\text{aux} = \frac{\lambda}{2B}\,\lVert h_1 A + a - p\rVert^2, \qquad
# \frac{\partial L_\text{aux}}{\partial h_1} = \frac{\lambda}{B}\,(h_1A + a - p)\,A^\top,$$
#
# flows back through the core ($p$ is held constant). It asks the state to carry information
# about the gradients the future will send, an extra training signal for the core that costs
# one small matrix product. **Check 5**: that gradient, with the package's `Linear` as the head,
# against finite differences.

# %%
aux_head = Linear(H, 2 * H, rng=np.random.default_rng(2), dtype=np.float64)
h_first, p_end, lam = rng.standard_normal((B, H)), rng.standard_normal((B, 2 * H)), 0.1


def aux_loss(h1):
    pred, _ = aux_head.forward(h1)
    return lam / (2 * B) * ((pred - p_end) ** 2).sum()


pred, aux_cache = aux_head.forward(h_first)
dh_first, _ = aux_head.backward(lam / B * (pred - p_end), aux_cache)
assert np.allclose(dh_first, numerical_gradient(aux_loss, h_first), rtol=1e-6, atol=1e-10)
print(f"aux-loss gradient at h_1 matches finite differences (max |diff| "
      f"{np.abs(dh_first - numerical_gradient(aux_loss, h_first)).max():.1e})")

# %% [markdown]
# ## 5. Copy with a curriculum: truncated BPTT, DNI, DNI + Aux
#
# The **Copy** task (`minidni.tasks`): $N$ random 8-bit vectors, a stop flag, then the network
# must output the $N$ vectors and an end marker; an episode takes $2N + 2$ steps. Episodes stream
# back to back in each of the $B$ rows, and the LSTM state is zeroed when a row's episode ends
# (`reset="episode"`, `PAPER.md` §6). The **curriculum** starts at $N = 1$ and grows $N$ by one
# whenever the mean error over the last 100 episodes of the current level is below 0.15 bits
# per episode. The paper reports the longest episode length solved, $N + 3$.
#
# With truncation $T = 3$, an output's error can reach an input through BPTT only if both lie in
# the same window, i.e. at most $T - 1 = 2$ steps apart. A vector read at step $t$ must be
# written at step $t + N + 1$ (after the other $N - 1$ inputs and the stop flag): 2 steps later
# for $N = 1$, but 3 or more for every $N \ge 2$, never in one window. From $N = 2$ on, truncated
# BPTT can only succeed if the state happens to keep the vector for reasons of its own (the output
# layer can still learn to read what is there). DNI's synthetic gradient carries (an estimate of)
# the later windows' gradients back into the window where the input was read.
#
# The loop below is the one behind `python -m minidni.run copy`, written out. Every setting is
# passed explicitly (the command's defaults may be tuned later; this notebook should not change
# with them). Each method is trained with the same seeds, so the three methods start from the same
# weights and draw the same random stream (until their curricula part ways); in full mode two
# seeds show how much a single run varies. The fast mode
# (`MINIDNI_FAST=1`) trains 300 windows with one seed: enough to run every line, far too short
# for the curriculum to move.

# %%
SETTINGS = dict(T=3, hidden=64, batch=32, lr=3e-3, sg_lr=3e-3, sg_scale=0.1, aux_weight=0.1, clip=1.0,
                reset="episode", optimizer="adam")
STEPS, LOG_EVERY, SEEDS = (300, 50, (0,)) if FAST else (20_000, 250, (0, 1))
MODES = ("bptt", "dni", "dni-aux")
print(f"Copy: {SETTINGS}; {STEPS} windows per run, seeds {SEEDS}")


def train_copy(mode, seed):
    """Train one LSTM on Copy with the curriculum; return (logs, seconds), one log per LOG_EVERY windows."""
    curriculum = Curriculum("copy")
    stream = CopyTaskStream(curriculum, SETTINGS["batch"], rng=np.random.default_rng([seed, 1]))
    scorer = EpisodeScorer(SETTINGS["batch"])
    trainer = RecurrentTrainer(IN_CHANNELS, OUT_CHANNELS, SETTINGS["hidden"], mode=mode, lr=SETTINGS["lr"],
                               sg_lr=SETTINGS["sg_lr"], sg_scale=SETTINGS["sg_scale"],
                               aux_weight=SETTINGS["aux_weight"], clip=SETTINGS["clip"], reset=SETTINGS["reset"],
                               optimizer=SETTINGS["optimizer"], rng=np.random.default_rng(seed))
    logs, start = [], time.perf_counter()
    for step in range(1, STEPS + 1):
        w = stream.next_window(SETTINGS["T"])     # x (T, B, 10), target (T, B, 9), mask, episode_end (T, B)
        bits = {}

        def loss_grad(logits, w=w):
            loss, dlogits, bits["step"] = copy_loss(logits, w.target, w.mask)
            return loss, dlogits

        trainer.train_window(w.x, loss_grad, episode_end=w.episode_end)
        curriculum.update(scorer.update(bits["step"], w.episode_end, w.level))
        if step % LOG_EVERY == 0:
            diag = trainer.collect_diagnostics()
            if diag["first_nonfinite"] is not None:
                raise FloatingPointError(f"{mode}: {diag['first_nonfinite']} became NaN or inf")
            logs.append({"step": step, "N": curriculum.lengths()[0], "solved": curriculum.max_episode_length,
                         "bits": curriculum.recent_mean, **diag})
    seconds = time.perf_counter() - start
    print(f"{mode:>8}, seed {seed}: level N = {curriculum.lengths()[0]}, longest solved episode length "
          f"{curriculum.max_episode_length} after {STEPS} windows ({seconds:.0f} s, {STEPS / seconds:.0f} windows/s)")
    return logs, seconds


runs = {(mode, seed): train_copy(mode, seed)[0] for seed in SEEDS for mode in MODES}
assert all(np.isfinite(e["loss"]) for logs in runs.values() for e in logs)

# %%
COLORS = {"bptt": "black", "dni": "tab:red", "dni-aux": "tab:blue"}
SEED_STYLE = {0: "-", 1: "--"}
# the curriculum levels are integers and the runs often share one: a small vertical offset per run
# (at most 0.08 of a level) keeps every line visible
LEVEL_OFFSET = {run: 0.03 * (k - (len(runs) - 1) / 2) for k, run in enumerate(runs)}


def series(mode, seed, key):
    return [e["step"] for e in runs[mode, seed]], [e[key] for e in runs[mode, seed]]


fig, axes = plt.subplots(2, 2, figsize=(12, 7.5), constrained_layout=True)
for (mode, seed) in runs:
    kw = dict(color=COLORS[mode], ls=SEED_STYLE.get(seed, ":"), lw=1.8, label=f"{mode}, seed {seed}")
    steps_, levels = series(mode, seed, "N")
    axes[0, 0].step(steps_, np.array(levels) + LEVEL_OFFSET[mode, seed], where="post", **kw)
    axes[0, 1].plot(*series(mode, seed, "bits"), **kw)
    if mode != "bptt":
        axes[1, 0].plot(*series(mode, seed, "sg_cosine"), **kw)
        axes[1, 1].plot(*series(mode, seed, "sg_ratio"), **kw)
axes[0, 0].set(ylabel="curriculum level N (vectors to copy)",
               title="Curriculum level (Table 2 reports N + 3 of the largest solved N)")
axes[0, 0].yaxis.get_major_locator().set_params(integer=True)
axes[0, 0].text(0.97, 0.6, "lines offset vertically by < 0.1\nso that all runs show", transform=axes[0, 0].transAxes,
                ha="right", va="center", fontsize=8, color="gray")
axes[0, 1].set(ylabel="mean error, last 100 episodes (bits/episode)", yscale="log",
               title="Error at the current level")
axes[0, 1].axhline(0.15, color="gray", ls="-.", lw=1, label="0.15 bits: level solved")
axes[1, 0].axhline(0.0, color="gray", lw=0.8)
axes[1, 0].set(ylabel=r"cos($\hat\delta$, bootstrapped target)", ylim=(-0.2, 1.0),
               title="Does the SG point where its target points? (1 = yes)")
axes[1, 1].set(ylabel=r"$|\hat\delta|$ / |bootstrapped target| (ratio)", yscale="log",
               title="Is the SG on its target's scale? (1 = yes)")
axes[0, 1].yaxis.set_major_locator(FixedLocator([0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50]))  # plain numbers on log axes
axes[0, 1].yaxis.set_major_formatter(FormatStrFormatter("%g"))
axes[0, 1].yaxis.set_minor_formatter(NullFormatter())
axes[1, 1].yaxis.set_major_formatter(FormatStrFormatter("%g"))
axes[1, 1].yaxis.set_minor_formatter(FormatStrFormatter("%g"))  # the ratio spans less than a decade
for ax, where in zip(axes.flat, ("lower right", "lower right", "upper right", "upper right")):
    ax.set_xlabel(f"training step (windows of T = {SETTINGS['T']} time steps)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc=where)
fig.suptitle(f"Copy with curriculum, truncation T = {SETTINGS['T']}: LSTM H = {SETTINGS['hidden']}, "
             f"batch {SETTINGS['batch']}, Adam lr {SETTINGS['lr']:g}, {STEPS} windows per run")
show(fig, "copy_curriculum")

# %% [markdown]
# **What DNI + Aux adds.** Its auxiliary head asks the *first* state of each window to predict
# the synthetic gradient $M$ will emit $T$ steps later. Left: that auxiliary loss (it starts at 0
# because $M$ starts at 0, rises as $M$ learns to say something, and is then driven down by the
# core and the head together). Right: the LSTM cell state's size, which stays bounded for every
# method because the state is reset at every episode's end (`PAPER.md` §6 saw it grow without
# bound when the state was never reset).

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 3.8), constrained_layout=True)
for (mode, seed) in runs:
    kw = dict(color=COLORS[mode], ls=SEED_STYLE.get(seed, ":"), lw=1.8, label=f"{mode}, seed {seed}")
    if mode == "dni-aux":
        ax1.plot(*series(mode, seed, "aux_loss"), **kw)
    ax2.plot(*series(mode, seed, "cell_rms"), **kw)
ax1.set(ylabel=r"aux loss $\frac{\lambda}{2B}\,\|h_1A + a - p\|^2$ (nats)",
        title=f"DNI + Aux: predicting the end-of-window SG (λ = {SETTINGS['aux_weight']})")
ax1.set_ylim(bottom=0)
ax2.set(ylabel="RMS of the cell state c (per unit)", title="Cell state stays bounded (state reset per episode)")
ax2.set_ylim(0, 1.35)  # room for the legend above the curves
for ax, (where, ncol) in zip((ax1, ax2), (("upper right", 1), ("upper right", 3))):
    ax.set_xlabel(f"training step (windows of T = {SETTINGS['T']} time steps)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc=where, ncol=ncol)
show(fig, "copy_aux_and_state")

solved = {mode: [runs[mode, seed][-1]["solved"] for seed in SEEDS] for mode in MODES}
for mode in MODES:
    last = [runs[mode, seed][-1] for seed in SEEDS]
    print(f"{mode:>8}: longest solved episode length per seed {solved[mode]}; level N {[e['N'] for e in last]}; "
          f"recent error {[round(e['bits'], 2) for e in last]} bits/episode; "
          f"cell RMS {[round(e['cell_rms'], 2) for e in last]}")
for (mode, seed), logs in runs.items():
    reached = {}
    for e in logs:
        reached.setdefault(e["N"], e["step"])
    sg = "" if mode == "bptt" else (f"; mean over the run: SG cosine {np.mean([e['sg_cosine'] for e in logs]):.3f}, "
                                    f"SG ratio {np.mean([e['sg_ratio'] for e in logs]):.2f}")
    print(f"{mode:>8}, seed {seed}: first log at each level N (windows): {reached}{sg}")

# %% [markdown]
# **Reading the plots** (our full run: 20 000 windows per run, two seeds, 20–70 s per run on one
# core of a busy shared CPU; the fast run is far too short for the curriculum to move).
#
# - **BPTT stops where the derivation says it must.** Both seeds of truncated BPTT solved $N = 1$
#   (Table 2's length 4) within the first 500 windows and then spent the remaining 19 500 windows
#   at $N = 2$, their error flat at 8–9 bits per episode. At $N = 2$ no output shares a window with
#   the input it must reproduce, and BPTT never found another way.
# - **DNI gets one level further.** DNI and DNI + Aux solved $N = 2$ too (length 5), after
#   3 750–4 250 windows in both seeds, and at the end were working on $N = 3$ with errors of
#   2.5–3.8 bits per episode and falling. The synthetic gradient did carry credit across the
#   window's edge. This is the paper's Table 2 in miniature (at $T = 3$: BPTT 8, DNI 14, DNI + Aux
#   17); the paper trained far longer.
# - **The SG's diagnostics look poor.** The cosine between $\hat\delta$ and its bootstrapped target
#   stays at 0.02–0.03 on average, and the SG is a fifth to a third of its target's size. Part of
#   this is unavoidable: each target contains the next window's *random* inputs and errors, which
#   nothing at $s_T$ can predict. Even the best possible SG, the conditional mean
#   $m = \mathbb E[\text{target}\mid s_T]$, would be shorter than a single target, and its cosine
#   with the target would equal its ratio $|m|/|\text{target}|$ (Exercise 6). Here the ratio is
#   about ten times the cosine, so most of what the linear SG outputs is *not* the predictable part
#   of the future gradient. The little it gets right was still enough for one more level than
#   BPTT. A falling cosine with a *growing* ratio would be the warning sign (`PAPER.md` §6).
# - **What DNI + Aux added here:** nothing visible in the curriculum (same levels, a few hundred
#   windows later to $N = 3$); at the end its error at $N = 3$ was a little lower in both seeds
#   (3.6 vs 3.8 and 2.5 vs 3.1 bits), too small a difference over two seeds to count as a
#   result. Its auxiliary loss jumps whenever the curriculum level changes (the SG it must predict
#   changes) and otherwise stays near 0.1–0.25 nats. In the paper's Table 2 the auxiliary task
#   helped most on Repeat Copy (at $T = 3$: 33 with DNI, 59 with DNI + Aux).
# - **The cell state stays bounded** (RMS below 1.1 per unit for every run) because the state is
#   reset at each episode's end. DNI's cell state ended larger than BPTT's (about 0.8–0.9 against
#   0.5 per unit), DNI + Aux's in between; we have not investigated why.
#
# ## Summary
#
# - Truncated BPTT is the exact gradient minus one term, $\delta_T\,\partial s_T/\partial\theta$:
#   everything the future would send back through the state at the window's edge. Chaining
#   windows with that term restored is BPTT (checked to rounding with the package's LSTM ops).
# - DNI fills the gap with $\hat\delta_T = M(s_T)$. Its target is the gradient that reaches the
#   next window's first state when that window is trained with *its* SG: the next window's own
#   losses plus $\hat\delta_{2T}$ pushed back through it. With a perfect $\hat\delta_{2T}$ this is
#   two-window BPTT; otherwise its error is the next SG's error pushed back one window. The
#   package's `RecurrentTrainer` computes exactly this target (checked), in per-example units
#   and with a scale that makes $M$ learn a discounted sum of future gradients.
# - DNI + Aux adds a prediction of the end-of-window SG from the window's first state, whose L2
#   loss trains the core.
#
# ## Exercises
#
# 1. In Check 2, make the LSTM forget faster (a more negative forget-gate bias in `b[H:2H]`).
#    How does the ratio |dropped term| / |kept term| change? And the factor by which an SG error
#    shrinks when pushed back one window (Check 3b)?
# 2. Unroll the bootstrapped target with `sg_scale` $\sigma$ over $k$ windows and show that an
#    exact $M$ would predict $\sum_{j\ge 0}\sigma^j\,\partial L^{(j)}/\partial s_T$ (per example),
#    where $L^{(j)}$ is the loss of the $j$-th next window. What does $\sigma = 1$ mean?
# 3. Rerun the Copy comparison with `SETTINGS["T"] = 5`. Which levels can BPTT now reach by the
#    argument of section 5, and which method gains more from the longer window?
# 4. Train with `SETTINGS["reset"] = "never"` (the state is carried across episodes) and watch
#    `cell_rms` and the SG ratio (`PAPER.md` §6).
# 5. Vary `SETTINGS["aux_weight"]` in DNI + Aux (0.01, 0.1, 1). Does the auxiliary task speed up
#    the curriculum?
# 6. Let the target be $t = m(s) + n$ with $m(s) = \mathbb E[t \mid s]$ and noise $n$ uncorrelated with
#    any function of $s$. Show that an SG that outputs exactly $m(s)$ has
#    $\mathbb E\langle m, t\rangle = \mathbb E\lVert m\rVert^2$, so that (over many rows) its cosine with
#    the target equals its norm ratio. What does a cosine ten times smaller than the ratio tell
#    you? Measure both for a trained SG on fresh windows with `RecurrentTrainer.predict_sg`.
