"""Feed-forward DNI: synthesizers, the training methods, their order of operations, the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minidni import models
from minidni.cli import TrainingDiverged
from minidni.dni.feedforward import FeedForwardTrainer, Module, build_trainer, raise_if_diverged
from minidni.dni.synthesizers import OracleSynthesizer, conv_synthesizer, mlp_regressor, mlp_synthesizer, param_grads
from minidni.experiments.feedforward import Dataset, main_cifar10, main_mnist, make_parser
from minidni.functional.losses import softmax_cross_entropy
from minidni.gradcheck import GradientCheckError, adjoint_check
from minidni.layers import Conv2d

N, D, WIDTH = 8, 12, 16
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tiny_fcn(seed, layers=3, dtype=np.float64):
    return models.fcn(layers, in_dim=D, width=WIDTH, rng=np.random.default_rng(seed), dtype=dtype)


def batch(seed, n=N, dtype=np.float64):
    rng = np.random.default_rng([seed, 7])
    return rng.random((n, D)).astype(dtype), rng.integers(0, 10, n)


def snapshot(modules):
    return [{k: v.copy() for k, v in m.net.params.items()} for m in modules]


def same(a, b):
    return all(np.array_equal(a[k], b[k]) for k in a)


def trainer(method, seed=0, *, layers=3, optimizer="adam", lr=1e-2, **kw):
    return build_trainer(tiny_fcn(seed, layers), method=method, in_shape=(D,), lr=lr, optimizer=optimizer,
                         sg_width=WIDTH, rng=np.random.default_rng([seed, 1]), dtype=np.float64, **kw)


# ---------------------------------------------------------------- synthesizers
@pytest.mark.parametrize("hidden", [0, 1, 2])
@pytest.mark.parametrize("conditioned", [False, True])
def test_zero_initialised_synthesizer_predicts_exactly_zero(hidden, conditioned):
    rng = np.random.default_rng(hidden)
    sg = mlp_synthesizer(D, hidden=hidden, width=WIDTH, conditioned=conditioned, rng=rng)
    last = sg.net.layers[-1]
    assert not last.params["W"].any() and not last.params["b"].any()  # weights AND bias
    h = rng.standard_normal((N, D)).astype(np.float32)
    delta, _ = sg.predict(h, rng.integers(0, 10, N))
    assert delta.dtype == np.float32 and delta.shape == h.shape and not delta.any()
    conv = conv_synthesizer(3, hidden=hidden, width=4, conditioned=conditioned, rng=rng)
    maps = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    delta, _ = conv.predict(maps, np.array([1, 9]))
    assert delta.shape == maps.shape and not delta.any()


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("method", ["dni", "cdni"])
def test_first_dni_step_leaves_lower_modules_unchanged(method, optimizer):
    tr = trainer(method, optimizer=optimizer)
    before = snapshot(tr.modules)
    result = tr.step(*batch(0))
    after = snapshot(tr.modules)
    assert same(before[0], after[0]) and same(before[1], after[1])  # the zero SG moved nothing
    assert not same(before[2], after[2])  # the top module learnt from the true loss
    assert result.updated == [True, True, True]


def test_conditioning_changes_the_input_shapes_as_documented():
    rng = np.random.default_rng(0)
    assert mlp_synthesizer(D, hidden=0, conditioned=True, rng=rng).net.layers[0].in_dim == D + 10
    assert mlp_synthesizer(D, hidden=1, width=WIDTH, rng=rng).net.layers[0].in_dim == D
    conv = conv_synthesizer(3, hidden=1, width=4, conditioned=True, rng=rng)
    assert conv.net.layers[0].in_ch == 3 + 10 and conv.net.layers[-1].out_ch == 3
    maps, labels = rng.standard_normal((2, 3, 4, 5)), np.array([2, 7])
    stacked = conv.condition(maps, labels)
    assert stacked.shape == (2, 13, 4, 5)
    np.testing.assert_array_equal(stacked[:, :3], maps)
    for n, label in enumerate(labels):  # mask channel k is all ones exactly when the label is k
        expected = np.zeros((10, 4, 5))
        expected[label] = 1.0
        np.testing.assert_array_equal(stacked[n, 3:], expected)
    with pytest.raises(ValueError, match="labels"):
        conv.predict(maps)


def test_synthesizer_works_in_per_example_units():
    rng = np.random.default_rng(1)
    sg = mlp_synthesizer(D, hidden=1, width=WIDTH, rng=rng, dtype=np.float64)
    sg.net.layers[-1].params["W"][...] = rng.standard_normal((WIDTH, D))
    h = rng.standard_normal((N, D))
    delta, cache = sg.predict(h)
    raw, _ = sg.net.forward(h)
    np.testing.assert_allclose(delta, raw / N, rtol=1e-12)
    loss, grads = sg.regression_grads(cache, delta)  # its own prediction as target: nothing to learn
    assert float(loss) == 0.0 and not any(g.any() for g in grads.values())


@pytest.mark.parametrize("net", ["synthesizer", "module", "conv"])
def test_param_grads_equal_the_full_backward_without_the_input_gradient(net):
    rng = np.random.default_rng(6)
    if net == "synthesizer":
        seq, h = mlp_synthesizer(D, hidden=2, width=WIDTH, conditioned=True, rng=rng).net, rng.random((N, D + 10))
    elif net == "module":
        seq, h = tiny_fcn(6)[0], rng.random((N, D))
    else:
        seq, h = conv_synthesizer(2, hidden=1, width=3, kernel_size=3, rng=rng).net, rng.random((N, 2, 4, 4))
    h = h.astype(np.float32)
    out, caches = seq.forward(h)
    dy = rng.standard_normal(out.shape).astype(np.float32)
    _, full = seq.backward(dy, caches)
    grads = param_grads(seq, dy, caches)
    assert list(grads) == list(full)
    for k in full:  # the same products in the same order: bit-identical
        assert grads[k].dtype == full[k].dtype and np.array_equal(grads[k], full[k]), k
    dx, module_grads = Module(seq, lr=0.1).backward(dy, caches, input_grad=False)
    assert dx is None and all(np.array_equal(module_grads[k], full[k]) for k in full)


@pytest.mark.parametrize("make", [
    lambda rng: mlp_synthesizer(D, hidden=0, rng=rng, lr=1e-2),
    lambda rng: mlp_synthesizer(D, hidden=1, width=WIDTH, rng=rng, lr=1e-2, conditioned=True),
    lambda rng: conv_synthesizer(2, hidden=1, width=3, kernel_size=3, rng=rng, lr=1e-2),
])
def test_regression_loss_falls_on_a_fixed_target(make):
    rng = np.random.default_rng(2)
    sg = make(rng)
    shape = (N, 2, 4, 4) if isinstance(sg.net.layers[0], Conv2d) else (N, D)
    h, labels = rng.standard_normal(shape).astype(np.float32), rng.integers(0, 10, N)
    teacher = (np.tanh(h) * 0.3 / N).astype(np.float32)  # a fixed target gradient in batch-mean units
    losses = []
    for _ in range(150):
        _, cache = sg.predict(h, labels)
        losses.append(float(sg.fit(cache, teacher)))
    assert losses[-1] < 0.1 * losses[0]
    assert sg.fits == 150


@given(seed=st.integers(0, 2**16), hidden=st.sampled_from([1, 2]), conditioned=st.booleans())
def test_mlp_synthesizer_gradients_float64(seed, hidden, conditioned):
    rng = np.random.default_rng(seed)
    sg = mlp_synthesizer(5, hidden=hidden, width=6, batchnorm=True, conditioned=conditioned, num_classes=3,
                         rng=rng, dtype=np.float64)
    _check_regression_gradients(sg, rng.standard_normal((7, 5)), rng.integers(0, 3, 7), rng, seed)


def test_conv_synthesizer_gradients_float64():
    rng = np.random.default_rng(3)
    sg = conv_synthesizer(2, hidden=1, width=3, kernel_size=3, batchnorm=True, conditioned=True, num_classes=3,
                          rng=rng, dtype=np.float64)
    _check_regression_gradients(sg, rng.standard_normal((4, 2, 4, 4)), np.array([0, 2, 1, 2]), rng, 3)


def _check_regression_gradients(sg, h, labels, rng, seed):
    for p in sg.net.params.values():  # leave the zero init: with a zero last layer most gradients vanish
        p[...] = rng.standard_normal(p.shape)
    keys = list(sg.net.params)
    start = [sg.net.params[k].copy() for k in keys]
    target = rng.standard_normal(h.shape) / h.shape[0]

    def loss_at(*values):
        for k, v in zip(keys, values):
            sg.net.params[k][...] = v
        _, cache = sg.predict(h, labels)
        return sg.regression_grads(cache, target)

    _, grads = loss_at(*start)
    analytic = [grads[k] for k in keys]
    # atol: a bias feeding BatchNorm has a true gradient of 0, and differences of an O(10) loss carry ~1e-9 noise
    adjoint_check(lambda *v: loss_at(*v)[0], start, analytic, None, names=keys, seed=seed, atol=1e-7)
    with pytest.raises(GradientCheckError):  # the check is not vacuous: a wrong gradient fails
        adjoint_check(lambda *v: loss_at(*v)[0], start, [g * 1.1 for g in analytic], None, names=keys, seed=seed)


# ---------------------------------------------------------------- methods
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_dni_with_an_oracle_synthesizer_equals_backprop(optimizer):
    def modules():
        return [Module(net, lr=0.05, optimizer=optimizer) for net in tiny_fcn(5, layers=4)]

    reference = FeedForwardTrainer(modules(), method="bprop")
    mods = modules()
    dni = FeedForwardTrainer(mods, method="dni", synthesizers=[OracleSynthesizer(mods[i + 1:]) for i in range(3)])
    for step in range(3):
        x, y = batch(step)
        reference.step(x, y)
        result = dni.step(x, y, diagnose=True)
        for a, b in zip(snapshot(reference.modules), snapshot(dni.modules)):
            for k in a:
                np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-12)
        np.testing.assert_allclose(list(result.to_host()["cosine"].values()), 1.0, atol=1e-12)
        np.testing.assert_allclose(list(result.to_host()["norm_ratio"].values()), 1.0, atol=1e-12)


class Recorder:
    """Wraps modules and synthesizers to log ``(event, index)`` in the order they happen."""

    def __init__(self, tr):
        self.events = []
        for i, m in enumerate(tr.modules):
            self._wrap(m, "forward", i)
            self._wrap(m, "update", i)
        for i, s in enumerate(tr.synthesizers):
            self._wrap(s, "predict", i)
            self._wrap(s, "fit", i)

    def _wrap(self, obj, name, i):
        inner = getattr(obj, name)

        def recorded(*args, **kwargs):
            self.events.append((name, i))
            return inner(*args, **kwargs)

        setattr(obj, name, recorded)


def test_dni_updates_module_i_before_module_i_plus_1_runs_forward():
    tr = trainer("dni", layers=4)
    events = Recorder(tr).events
    tr.step(*batch(0))
    assert events == [("forward", 0), ("predict", 0), ("update", 0),
                      ("forward", 1), ("predict", 1), ("update", 1), ("fit", 0),
                      ("forward", 2), ("predict", 2), ("update", 2), ("fit", 1),
                      ("forward", 3), ("update", 3), ("fit", 2)]
    bprop = trainer("bprop", layers=4)
    events = Recorder(bprop).events
    bprop.step(*batch(0))  # backprop: every forward before any update (update locked)
    assert events == [("forward", i) for i in range(4)] + [("update", i) for i in (3, 2, 1, 0)]


@pytest.mark.parametrize("method", ["dni", "cdni", "bprop"])
def test_p_update_zero_freezes_a_module(method):
    tr = trainer(method, p_update=[1.0, 0.0, 1.0])
    before = snapshot(tr.modules)
    for step in range(3):
        assert tr.step(*batch(step)).updated[1] is False
    after = snapshot(tr.modules)
    assert same(before[1], after[1]) and not same(before[2], after[2])
    # bprop: no gradient crosses the skipped module. DNI: module 0's synthesizer never gets a target
    # (it must come back through module 1), so it stays at its zero init and module 0 cannot move
    assert same(before[0], after[0])
    if method != "bprop":
        assert tr.synthesizers[0].fits == 0 and tr.synthesizers[1].fits == 3


@pytest.mark.parametrize("method", ["dni", "cdni"])
def test_dni_keeps_training_above_a_frozen_bottom_module(method):
    tr = trainer(method, p_update=[0.0, 1.0, 1.0])
    before = snapshot(tr.modules)
    for step in range(3):
        assert tr.step(*batch(step)).updated == [False, True, True]
    after = snapshot(tr.modules)
    assert same(before[0], after[0]) and not same(before[1], after[1])
    assert tr.synthesizers[0].fits == 3  # it still learns from module 1's backward


def test_warmup_holds_back_the_lower_modules():
    tr = trainer("dni", warmup=3)
    before = snapshot(tr.modules)
    for step in range(3):
        assert tr.step(*batch(step)).updated == [False, False, True]
    assert same(before[0], snapshot(tr.modules)[0])
    assert tr.synthesizers[0].fits == 3 and tr.synthesizers[0].ready
    assert tr.step(*batch(3)).updated == [True, True, True]
    assert not same(before[0], snapshot(tr.modules)[0])


def test_no_bprop_trains_only_the_output_layer():
    tr = trainer("no-bprop")
    before = snapshot(tr.modules)
    tr.step(*batch(0))
    after = snapshot(tr.modules)
    assert same(before[0], after[0]) and same(before[1], after[1])
    changed = {k for k in before[2] if not np.array_equal(before[2][k], after[2][k])}
    assert changed == {"3.W", "3.b"}  # Linear-BN-ReLU-[Linear]: only the output layer


def test_true_gradients_are_backprop_deltas():
    tr = trainer("dni", seed=7, layers=4)
    tr.step(*batch(0))  # move off the initial point
    x, y = batch(1)
    h, caches = x, []
    for m in tr.modules:
        h, cache = m.forward(h)
        caches.append(cache)
    _, d = softmax_cross_entropy(h, y)
    expected = []
    for m, cache in zip(tr.modules[:0:-1], caches[:0:-1]):
        d, _ = m.net.backward(d, cache)
        expected.append(d)
    for got, want in zip(tr.true_gradients(x, y), expected[::-1]):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("method, extra", [("dni", {}), ("cdni", {}), ("cdni", {"unlock_forward": True}),
                                           ("dni", {"p_update": 0.5})])
def test_diagnostic_pass_changes_nothing(method, extra):
    a, b = trainer(method, seed=4, **extra), trainer(method, seed=4, **extra)
    for step in range(3):
        assert a.step(*batch(step), diagnose=True).cosine or extra.get("p_update")  # diagnostics really ran
        b.step(*batch(step))
    for pa, pb in zip(snapshot(a.modules), snapshot(b.modules)):
        assert same(pa, pb)
    for ma, mb in zip(a.modules, b.modules):
        assert all(np.array_equal(v, mb.net.buffers[k]) for k, v in ma.net.buffers.items())
    for sa, sb in zip(a.synthesizers + (a.input_models or []), b.synthesizers + (b.input_models or [])):
        assert same(sa.net.params, sb.net.params)


def test_complete_unlock_trains_modules_on_predicted_inputs():
    tr = trainer("cdni", unlock_forward=True, sg_lr=1e-2)
    seen, predicted = [], []
    forward, predict = tr.modules[1].forward, tr.input_models[0].predict
    tr.modules[1].forward = lambda h, **kw: (seen.append(h), forward(h, **kw))[1]
    tr.input_models[0].predict = lambda x, **kw: (lambda out: (predicted.append(out[0]), out)[1])(predict(x, **kw))
    x, y = batch(0)
    losses = [tr.step(x, y).to_host()["input_loss"] for _ in range(40)]
    assert seen[-1] is predicted[-1]  # module 1 ran on I_1(x), not on module 0's output
    assert losses[-1][1] < 0.5 * losses[0][1] and losses[-1][2] < 0.5 * losses[0][2]


def test_divergence_names_the_module_and_step():
    host = {"loss": 1.0, "sg_loss": {0: 0.1, 1: float("nan")}, "input_loss": {}}
    with pytest.raises(TrainingDiverged, match=r"synthesizer after module 1 diverged at step 17.*--sg-lr"):
        raise_if_diverged(host, 17)
    with pytest.raises(TrainingDiverged, match="training loss"):
        raise_if_diverged({"loss": float("inf"), "sg_loss": {}, "input_loss": {}}, 3)
    raise_if_diverged({"loss": 1.0, "sg_loss": {0: 2.0}, "input_loss": {1: 3.0}}, 3)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="hidden must be one of 0, 1, 2"):
        mlp_synthesizer(D, hidden=3, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="method must be one of"):
        trainer("dnii")
    with pytest.raises(ValueError, match="p_update"):
        trainer("dni", p_update=1.5)
    with pytest.raises(ValueError, match="needs at least 2 modules"):
        trainer("dni", layers=1)
    with pytest.raises(ValueError, match="forward unlock needs --method dni or cdni"):
        trainer("bprop", unlock_forward=True)
    with pytest.raises(ValueError, match="warmup"):
        mlp_regressor(3, 2, warmup=-1, rng=np.random.default_rng(0))


# ---------------------------------------------------------------- command line
def tiny_dataset(seed=0, n_train=96, n_test=40, shape=(28, 28)):
    """Images in [0, 1] whose label is readable from the mean brightness of a few pixels (learnable)."""
    rng = np.random.default_rng(seed)

    def split(n):
        y = rng.integers(0, 10, n)
        x = rng.random((n, *shape)).astype(np.float32) * 0.3
        x.reshape(n, -1)[:, :10] += (y[:, None] == np.arange(10)) * 0.7
        return x, y

    return Dataset(*split(n_train), *split(n_test))


@pytest.mark.parametrize("method, extra", [("cdni", ["--warmup", "2"]), ("bprop", ["--no-log-sg"]),
                                           ("dni", ["--unlock", "forward", "--sg-width", "8"])])
def test_cli_writes_summary_and_figures(tmp_path, method, extra):
    out = tmp_path / method
    argv = ["--method", method, "--layers", "2", "--steps", "6", "--batch", "16", "--lr", "1e-3",
            "--eval-every", "3", "--log-every", "2", "--no-progress", "--out", str(out), *extra]
    assert main_mnist(argv, load=lambda data_dir: tiny_dataset()) == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in ("test_error_percent", "steps", "wall_seconds", "steps_per_second", "backend", "options"):
        assert key in summary
    assert summary["steps"] == 6 and summary["options"]["method"] == method and summary["backend"] == "numpy"
    every_option = {a.dest for a in make_parser("mnist")._actions if a.dest != "help"}
    assert every_option <= set(summary["options"])  # (the command line may add the distributed options)
    assert [e["step"] for e in summary["curves"]["evals"]] == [0, 3, 6]
    assert (out / "learning_curve.png").read_bytes()[:8] == PNG_MAGIC
    if method == "bprop":
        assert not (out / "sg_diagnostics.png").exists()
    else:
        assert (out / "sg_diagnostics.png").read_bytes()[:8] == PNG_MAGIC
        assert all(set(log["cosine"]) == {"0"} for log in summary["curves"]["logs"])  # one SG: 2 layers


def test_cli_sg_logging_can_be_switched_off_and_never_trains(tmp_path, monkeypatch):
    def run(flag, forbid=False):
        if forbid:
            def forbidden(self, x, y):
                raise AssertionError("the diagnostic pass ran with --no-log-sg")
            monkeypatch.setattr(FeedForwardTrainer, "true_gradients", forbidden)
        out = tmp_path / flag
        argv = ["--method", "dni", "--layers", "3", "--sg-width", "8", "--steps", "6", "--batch", "16",
                "--lr", "1e-3", "--eval-every", "2", "--log-every", "1", "--no-progress", flag, "--out", str(out)]
        assert main_mnist(argv, load=lambda data_dir: tiny_dataset()) == 0
        return json.loads((out / "summary.json").read_text())["curves"], out

    on, out_on = run("--log-sg")
    off, out_off = run("--no-log-sg", forbid=True)
    assert all(set(log["cosine"]) == {"0", "1"} for log in on["logs"])  # a cosine per synthesizer
    assert all(not log["cosine"] for log in off["logs"]) and not (out_off / "sg_diagnostics.png").exists()
    # the true gradient is only logged: losses and test errors are identical with and without it
    assert [log["loss"] for log in on["logs"]] == [log["loss"] for log in off["logs"]]
    assert [log["sg_loss"] for log in on["logs"]] == [log["sg_loss"] for log in off["logs"]]
    assert [e["test_error_percent"] for e in on["evals"]] == [e["test_error_percent"] for e in off["evals"]]


def test_cli_rejects_a_corrupt_data_file_in_one_line(tmp_path, capsys):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz"):
        (folder / name).write_bytes(b"not mnist")
    code = main_mnist(["--data-dir", str(tmp_path), "--steps", "1", "--no-progress", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "corrupt" in err


def test_cli_cnn_on_cifar_shaped_data(tmp_path):
    argv = ["--model", "cnn", "--width", "6", "--layers", "2", "--method", "cdni", "--sg-width", "4", "--steps", "2", "--batch", "4",
            "--eval-every", "2", "--log-every", "1", "--no-progress", "--out", str(tmp_path)]
    load = lambda data_dir: tiny_dataset(n_train=8, n_test=4, shape=(3, 32, 32))  # noqa: E731
    assert main_cifar10(argv, load=load) == 0
    assert json.loads((tmp_path / "summary.json").read_text())["model"] == "cnn"


@pytest.mark.parametrize("argv, message", [
    (["--sg-hidden", "3"], "--sg-hidden"),
    (["--p-update", "1.5"], "1.5 is out of range (accepted: a finite number >= 0 and <= 1)"),
    (["--method", "bprop", "--unlock", "forward"], "--unlock forward needs --method dni or cdni"),
    (["--model", "cnn", "--unlock", "forward"], "fcn only"),
    (["--layers", "1"], "--layers 2 or more"),
    (["--lr-decay-steps", "5", "3"], "strictly increasing"),
    (["--batch", "1000", "--steps", "1"], "larger than the training set"),
    (["--backend", "tpu"], "invalid choice"),
])
def test_cli_bad_options_are_one_line_errors(tmp_path, capsys, argv, message):
    code = main_mnist([*argv, "--no-progress", "--out", str(tmp_path)], load=lambda data_dir: tiny_dataset())
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and len(err.splitlines()) == 1


def test_cli_reports_divergence_in_one_line(tmp_path, capsys):
    argv = ["--method", "dni", "--layers", "2", "--steps", "4", "--batch", "16", "--lr", "1e30", "--sg-lr", "1e30",
            "--log-every", "1", "--no-progress", "--out", str(tmp_path)]
    with np.errstate(all="ignore"):
        assert main_mnist(argv, load=lambda data_dir: tiny_dataset()) == 2
    err = capsys.readouterr().err.strip()
    assert "diverged" in err or "training loss" in err
    assert len(err.splitlines()) == 1


def test_bench_reports_flops_and_ratios(tmp_path, capsys):
    from minidni.bench.feedforward import main as bench

    out = tmp_path / "bench.json"
    assert bench(["--layers", "2", "--batch", "4", "--rounds", "2", "--steps", "1", "--sg-width", "8",
                  "--methods", "bprop", "dni", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["methods"]
    assert rows["bprop"]["synthesizer_flops"] == 0 and rows["bprop"]["time_ratio"] == 1.0
    # dni: one SG 256 -> 8 -> 8 -> 256 on a batch of 4, 6 N D M per Linear, 4 N D M for a first Linear
    # whose input gradient is skipped (the SG's and the bottom module's)
    assert rows["dni"]["synthesizer_flops"] == 4 * 4 * 256 * 8 + 6 * 4 * (8 * 8 + 8 * 256)
    assert rows["dni"]["model_flops"] == 4 * 4 * 784 * 256 + 6 * 4 * (256 * 256 + 256 * 10)


def test_table1_and_sweep_write_tables_and_figures(tmp_path, monkeypatch, capsys):
    from minidni.experiments import table1

    from minidni.experiments import feedforward

    monkeypatch.setitem(feedforward.LOADERS, "mnist", lambda data_dir: tiny_dataset())  # the runs run inline
    common = ["--steps", "2", "--batch", "16", "--eval-every", "1", "--log-every", "1", "--sg-width", "4",
              "--executor", "inline", "--out", str(tmp_path / "runs"), "--figures", str(tmp_path / "fig")]
    assert table1.main(["--layers", "3", "--methods", "cdni", *common]) == 0
    table = (tmp_path / "fig" / "table1_mnist.md").read_text()
    assert "| 3 | cdni |" in table and "| 2.2 |" in table and "500k" in table  # the paper's cDNI number beside ours
    assert (tmp_path / "fig" / "table1_mnist.png").stat().st_size > 0
    capsys.readouterr()
    assert table1.main(["--layers", "3", "--methods", "cdni", "--resume", *common]) == 0
    assert capsys.readouterr().err.count("reusing") == 1
    assert table1.main(["--sweep", "p-update", "--sweep-methods", "cdni", "--p-values", "1", "0.5", *common]) == 0
    sweep = json.loads((tmp_path / "fig" / "p_update_sweep.json").read_text())
    assert set(sweep["ours"]["cdni"]) == {"1.0", "0.5"} and (tmp_path / "fig" / "p_update_sweep.png").exists()
    md = (tmp_path / "fig" / "p_update_sweep.md").read_text()
    errors = [f"{sweep['ours']['cdni'][p]['test_error_percent']:.2f}" for p in ("1.0", "0.5")]
    assert f"| 1 | {errors[0]} |" in md and f"| 0.5 | {errors[1]} |" in md
    assert "p_update = 0.05" in md and "--sweep p-update" in md  # the paper's claim and the command
