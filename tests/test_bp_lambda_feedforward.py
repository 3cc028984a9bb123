"""Feed-forward BP(λ): the endpoints (every-layer DNI, backprop), the mixture itself, refusals, the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from minidni import models
from minidni.dni.feedforward import FeedForwardTrainer, Module, bp_lambda_mix, build_trainer
from minidni.dni.synthesizers import OracleSynthesizer
from minidni.experiments.feedforward import Dataset, main_mnist

N, D, WIDTH = 8, 12, 16


def tiny_fcn(seed, layers=3):
    return models.fcn(layers, in_dim=D, width=WIDTH, rng=np.random.default_rng(seed), dtype=np.float64)


def batch(step):
    rng = np.random.default_rng([step, 7])
    return rng.random((N, D)), rng.integers(0, 10, N)


def trainer(method, *, layers=3, optimizer="adam", lr=1e-2, **kw):
    """A float64 trainer; the same nets, synthesizers and coins whatever the method and target."""
    return build_trainer(tiny_fcn(0, layers), method=method, in_shape=(D,), lr=lr, optimizer=optimizer,
                         sg_width=WIDTH, sg_lr=lr, rng=np.random.default_rng(1), dtype=np.float64, **kw)


def state(tr):
    """Every module's and synthesizer's params and buffers (BatchNorm statistics), flattened into one dict."""
    out = {}
    for kind, nets in (("m", [m.net for m in tr.modules]), ("s", [s.net for s in tr.synthesizers])):
        for i, net in enumerate(nets):
            out.update({f"{kind}{i}.{k}": v.copy() for k, v in {**net.params, **net.buffers}.items()})
    return out


def assert_same(a, b, atol=1e-12):
    assert a.keys() == b.keys() or set(a) <= set(b)
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=atol, err_msg=k)


def train(tr, steps=4):
    return [tr.step(*batch(step), diagnose=step == steps - 1).to_host() for step in range(steps)]


@pytest.mark.parametrize("method, kw", [("dni", {}), ("cdni", {}), ("dni", {"p_update": [0.8, 0.5, 0.7]}),
                                        ("dni", {"warmup": 2, "optimizer": "sgd"})])
def test_lambda_zero_is_every_layer_dni(method, kw):
    """Same modules, synthesizers and BatchNorm statistics after a few steps: coins, warm-up and cDNI included."""
    dni, mix = trainer(method, **kw), trainer(method, sg_target="bp-lambda", sg_lambda=0.0, **kw)
    logs_dni, logs_mix = train(dni), train(mix)
    assert_same(state(dni), state(mix))
    assert [log["updated"] for log in logs_dni] == [log["updated"] for log in logs_mix]
    assert any(not all(log["updated"]) for log in logs_dni) == ("p_update" in kw or "warmup" in kw)
    for a, b in zip(logs_dni, logs_mix):
        assert a["sg_loss"].keys() == b["sg_loss"].keys()
        np.testing.assert_allclose(list(b["sg_loss"].values()), list(a["sg_loss"].values()), rtol=0, atol=1e-12)
        assert a["cosine"].keys() == b["cosine"].keys()
        np.testing.assert_allclose(list(b["cosine"].values()), list(a["cosine"].values()), rtol=0, atol=1e-12)
    assert logs_mix[-1]["cosine"]  # the diagnostics ran


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_lambda_one_is_backprop(optimizer):
    bprop, mix = trainer("bprop", optimizer=optimizer), trainer("dni", optimizer=optimizer, sg_target="bp-lambda",
                                                               sg_lambda=1.0)
    train(bprop), train(mix)
    modules = {k: v for k, v in state(mix).items() if k.startswith("m")}
    assert_same(state(bprop), modules)
    assert mix.synthesizers[0].fits == 4  # the synthesizers still regress (onto the true gradient)


def test_an_oracle_synthesizer_makes_every_lambda_backprop():
    """With δ̂_i the true gradient, every mixture of it and the backpropagated one is the true gradient.

    SGD: the two are equal only up to roundoff, and Adam would turn the roundoff of a gradient that is
    analytically zero (the bias before a BatchNorm) into steps of ~1e-10.
    """
    def modules():
        return [Module(net, lr=0.05, optimizer="sgd") for net in tiny_fcn(5, layers=4)]

    reference = FeedForwardTrainer(modules(), method="bprop")
    mods = modules()
    mix = FeedForwardTrainer(mods, method="dni", synthesizers=[OracleSynthesizer(mods[i + 1:]) for i in range(3)],
                             sg_target="bp-lambda", sg_lambda=0.3)
    for step in range(3):
        reference.step(*batch(step))
        mix.step(*batch(step))
    for a, b in zip(reference.modules, mix.modules):
        assert_same(a.net.params, b.net.params)


class FixedSynthesizer:
    """Predicts a fixed gradient (N, D) and records the targets it is fitted on."""

    ready = True

    def __init__(self, value):
        self.value, self.targets = value, []

    def predict(self, h, labels=None):
        return self.value, "cache"

    def fit(self, cache, target):
        self.targets.append(target.copy())
        return np.zeros(())


def test_each_module_learns_from_the_mixture_and_each_synthesizer_from_the_one_above():
    """One SGD step by hand: g_2 = dL/dh_2 (top), b_i = g_{i+1} dh_{i+1}/dh_i, g_i = λ b_i + (1 - λ) δ̂_i."""
    lam, lr = 0.3, 0.1
    rng = np.random.default_rng(3)
    fixed = [FixedSynthesizer(rng.normal(0, 0.1, (N, WIDTH))) for _ in range(2)]
    mods = [Module(net, lr=lr, optimizer="sgd") for net in tiny_fcn(2)]
    copies = [Module(net, lr=lr, optimizer="sgd") for net in tiny_fcn(2)]
    tr = FeedForwardTrainer(mods, method="dni", synthesizers=fixed, sg_target="bp-lambda", sg_lambda=lam)
    x, y = batch(0)
    h, caches = x, []
    for m in copies:  # the expected step, on an identical copy
        h, cache = m.forward(h)
        caches.append(cache)
    _, g = tr.loss_fn(h, y)
    expected_b, expected_grads = {}, {}
    for i in (2, 1, 0):
        if i < 2:
            expected_b[i] = g
            g = lam * g + (1 - lam) * fixed[i].value
        g, expected_grads[i] = copies[i].backward(g, caches[i])
    before = [{k: v.copy() for k, v in m.net.params.items()} for m in mods]
    tr.step(x, y)
    for i in (0, 1):
        np.testing.assert_allclose(fixed[i].targets[0], expected_b[i], rtol=1e-12, atol=1e-14)
    for i, m in enumerate(mods):
        for k, v in m.net.params.items():
            np.testing.assert_allclose(before[i][k] - v, lr * expected_grads[i][k], rtol=1e-10, atol=1e-14)


def test_bp_lambda_runs_backprops_order_every_module_waits_for_the_backward_from_above():
    """Locked as backprop: every forward (each SG predicting on the way) before any fit or update, then top down."""
    tr = trainer("dni", layers=4, sg_target="bp-lambda", sg_lambda=0.5)
    events = []
    for kind, objs in (("forward", tr.modules), ("update", tr.modules), ("predict", tr.synthesizers),
                       ("fit", tr.synthesizers)):
        for i, obj in enumerate(objs):
            inner = getattr(obj, kind)
            setattr(obj, kind, lambda *a, _inner=inner, _e=(kind, i), **k: events.append(_e) or _inner(*a, **k))
    tr.step(*batch(0))
    assert events == [("forward", 0), ("predict", 0), ("forward", 1), ("predict", 1), ("forward", 2),
                      ("predict", 2), ("forward", 3),
                      ("update", 3), ("fit", 2), ("update", 2), ("fit", 1), ("update", 1), ("fit", 0), ("update", 0)]


def test_the_mixture_keeps_dtype_and_returns_an_endpoint_as_is():
    b, s = np.ones(3, np.float32), np.full(3, 3.0, np.float32)
    assert bp_lambda_mix(b, s, 0.0) is s and bp_lambda_mix(b, s, 1.0) is b
    mixed = bp_lambda_mix(b, s, 0.25)
    assert mixed.dtype == np.float32 and np.allclose(mixed, 2.5)


def test_a_module_below_a_skipped_backward_falls_back_to_its_synthetic_gradient():
    tr = trainer("dni", sg_target="bp-lambda", sg_lambda=0.5, p_update=[1.0, 0.0, 1.0])
    for step in range(3):
        assert tr.step(*batch(step)).updated == [True, False, True]
    assert tr.synthesizers[0].fits == 0 and tr.synthesizers[1].fits == 3  # S_0's target comes through module 1


@pytest.mark.parametrize("kw, message", [
    ({"method": "bprop", "sg_target": "bp-lambda"}, "needs dni or cdni"),
    ({"method": "dni", "sg_target": "bp-lambda", "unlock_forward": True}, "without input models"),
    ({"method": "dni", "sg_target": "bp-lambda", "sg_lambda": 1.5}, "sg_lambda must be in"),
    ({"method": "dni", "sg_target": "td"}, "sg_target must be one of"),
])
def test_bad_arguments_are_clear_errors(kw, message):
    method = kw.pop("method")
    with pytest.raises(ValueError, match=message):
        trainer(method, **kw)


def tiny_dataset():
    rng = np.random.default_rng(0)
    return Dataset(rng.random((64, 28, 28), dtype=np.float32), rng.integers(0, 10, 64),
                   rng.random((32, 28, 28), dtype=np.float32), rng.integers(0, 10, 32))


def test_cli_trains_bp_lambda_and_records_it(tmp_path):
    argv = ["--method", "dni", "--sg-target", "bp-lambda", "--sg-lambda", "0.25", "--layers", "3", "--sg-width", "8",
            "--steps", "4", "--batch", "16", "--eval-every", "2", "--log-every", "2", "--no-progress",
            "--out", str(tmp_path)]
    assert main_mnist(argv, load=lambda data_dir: tiny_dataset()) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["sg_target"], summary["sg_lambda"], summary["steps"]) == ("bp-lambda", 0.25, 4)
    assert all(set(log["cosine"]) == {"0", "1"} for log in summary["curves"]["logs"])


@pytest.mark.parametrize("argv, message", [
    (["--method", "bprop", "--sg-target", "bp-lambda"], "--sg-target bp-lambda needs --method dni or cdni"),
    (["--sg-target", "bp-lambda", "--unlock", "forward"], "without --unlock (got --method dni --unlock forward)"),
    (["--sg-lambda", "0.5"], "--sg-lambda 0.5 needs --sg-target bp-lambda"),
    (["--sg-target", "bp-lambda", "--sg-lambda", "2"], "2 is out of range (accepted: a finite number >= 0 and <= 1)"),
    (["--sg-target", "bp-lambda", "--workers", "2"], "--workers"),
])
def test_cli_bad_combinations_are_one_line_errors(tmp_path, capsys, argv, message):
    code = main_mnist([*argv, "--no-progress", "--out", str(tmp_path)], load=lambda data_dir: tiny_dataset())
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1


@pytest.mark.cupy
def test_bp_lambda_on_cupy_matches_numpy(cupy):
    from minidni import backend
    from minidni.backend import to_device, to_numpy

    def run(name):
        backend.set_backend(name)
        try:
            tr = trainer("dni", optimizer="sgd", sg_target="bp-lambda", sg_lambda=0.4, p_update=[1.0, 0.7, 1.0])
            for step in range(3):
                x, y = batch(step)
                tr.step(to_device(x), to_device(y), diagnose=step == 2)
            return {k: np.array(to_numpy(v)) for k, v in state(tr).items()}
        finally:
            backend.set_backend("numpy")

    import strict_cupy

    got, ref = run("cupy"), run("numpy")
    # the stand-in computes with NumPy; on a GPU, Adam (the synthesizers') turns rounding into drift
    tol = dict(rtol=1e-4, atol=1e-5) if cupy is strict_cupy.module else dict(rtol=0.1, atol=0.05)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], err_msg=k, **tol)
