"""The PyTorch twin of the benchmark (minidni.bench.torch) computes what minidni computes: one Copy window's
loss and gradients (bptt, dni incl. the SG's bootstrapped fit) from the same weights, to float32 tolerance; and
50 windows of the copy command's own run (its curriculum, logs and checkpoints) end with the same losses and
weights as the twin trained on the same windows (an independent cross-check of the trainer, Table 2 issue).

Optional: skips without PyTorch (pip install -e ".[bench]")."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (optional: pip install -e '.[bench]')")

from minidni.bench.torch import TorchCopyTrainer, main  # noqa: E402  (needs torch)
from minidni.dni.recurrent import RecurrentTrainer, copy_loss  # noqa: E402
from minidni.tasks import CopyTaskStream, Curriculum  # noqa: E402
from minidni.tasks.copy import IN_CHANNELS, OUT_CHANNELS  # noqa: E402

H, B, T = 16, 8, 3
RTOL, ATOL = 2e-4, 2e-6  # float32, different summation orders


def _core_grads_torch(tt: TorchCopyTrainer) -> dict:
    g = {"lstm.Wx": tt.cell.weight_ih.grad.T, "lstm.Wh": tt.cell.weight_hh.grad.T, "lstm.b": tt.cell.bias_ih.grad,
         "head.W": tt.head.weight.grad.T, "head.b": tt.head.bias.grad}
    if tt.aux is not None:
        g.update({"aux.W": tt.aux.weight.grad.T, "aux.b": tt.aux.bias.grad})
    return {k: v.numpy() for k, v in g.items()}


@pytest.mark.parametrize("mode", ["bptt", "dni", "dni-aux"])
def test_copy_windows_match_pytorch(mode):
    torch.set_num_threads(1)
    ours = RecurrentTrainer(IN_CHANNELS, OUT_CHANNELS, H, mode=mode, clip=0.0, rng=np.random.default_rng(0))
    if ours.uses_sg:  # a nonzero M, so the injected SG and its regression matter
        ours.sg.params["W"][...] = np.random.default_rng(1).standard_normal((2 * H, 2 * H)) * 0.05
        ours.sg.params["b"][...] = 0.01
    theirs = TorchCopyTrainer(ours)
    stream = CopyTaskStream(Curriculum("copy", start_length=2, max_length=2), B, rng=np.random.default_rng(2))
    resets, losses = 0, []
    for window in range(4):
        w = stream.next_window(T)
        resets += int(w.episode_end.sum())
        loss = ours.train_window(w.x, lambda logits: copy_loss(logits, w.target, w.mask), episode_end=w.episode_end)
        loss_t = theirs.train_window(w.x, w.target, w.mask, w.episode_end)
        np.testing.assert_allclose(float(loss_t), float(loss), rtol=RTOL, err_msg=f"loss, window {window}")
        losses.append(float(loss))
        for k, g in _core_grads_torch(theirs).items():
            np.testing.assert_allclose(ours.core.grads[k], g, rtol=RTOL, atol=ATOL, err_msg=f"{k}, window {window}")
        if ours.uses_sg and window > 0:  # M's bootstrapped fit on the previous window's state
            np.testing.assert_allclose(ours.sg_flat.grads["W"], theirs.sg.weight.grad.T.numpy(), rtol=RTOL, atol=ATOL)
            np.testing.assert_allclose(ours.sg_flat.grads["b"], theirs.sg.bias.grad.numpy(), rtol=RTOL, atol=ATOL)
        for k, v in ours.core_params.items():  # after one Adam step each, the weights still agree
            mine = {"lstm.Wx": theirs.cell.weight_ih.T, "lstm.Wh": theirs.cell.weight_hh.T,
                    "lstm.b": theirs.cell.bias_ih, "head.W": theirs.head.weight.T, "head.b": theirs.head.bias,
                    **({"aux.W": theirs.aux.weight.T, "aux.b": theirs.aux.bias} if theirs.aux is not None else {})}
            np.testing.assert_allclose(v, mine[k].detach().numpy(), rtol=1e-4, atol=1e-6, err_msg=k)
    assert resets > 0 and sum(v > 0 for v in losses) >= 3  # the windows exercised resets and scored outputs
    assert np.abs(ours.core.grads["lstm.Wh"]).max() > 0
    if ours.uses_sg:
        assert np.abs(ours.sg_flat.grads["W"]).max() > 0


def test_the_twin_sees_a_different_model_as_different():
    """The comparison can fail: a changed PyTorch weight changes the loss beyond the tolerance."""
    ours = RecurrentTrainer(IN_CHANNELS, OUT_CHANNELS, H, mode="bptt", clip=0.0, rng=np.random.default_rng(0))
    theirs = TorchCopyTrainer(ours)
    with torch.no_grad():
        theirs.cell.bias_ih[2 * H:3 * H] += 0.1  # the g block
    stream = CopyTaskStream(Curriculum("copy", start_length=2, max_length=2), B, rng=np.random.default_rng(2))
    for _ in range(2):
        w = stream.next_window(T)
        loss = ours.train_window(w.x, lambda logits: copy_loss(logits, w.target, w.mask), episode_end=w.episode_end)
        loss_t = theirs.train_window(w.x, w.target, w.mask, w.episode_end)
    assert float(loss) > 0 and not np.isclose(float(loss_t), float(loss), rtol=RTOL)


def test_bench_torch_quick_writes_json_and_chart(tmp_path, capsys):
    out = tmp_path / "bench_torch.json"
    assert main(["--quick", "--threads", "1", "--keep-blas-env", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    names = [r["name"] for r in result["items"]]
    assert names == ["lstm_copy", "lstm_copy_no_onednn", "lstm_ptb", "lstm_ptb_no_onednn", "copy_bptt", "copy_dni",
                     "copy_dni-aux", "fcn_bprop", "fcn_cdni"]
    assert all(r["ratio"] > 0 and np.isfinite(r["ratio"]) for r in result["items"])
    assert result["machine"]["numpy_blas"] and result["config"]["threads"] == 1
    assert (tmp_path / "bench_torch.png").stat().st_size > 0
    assert "ratio" in capsys.readouterr().out


@pytest.mark.parametrize("mode", ["bptt", "dni", "dni-aux"])
def test_fifty_windows_of_the_copy_command_match_pytorch(mode, tmp_path):
    """The trainer, not just the ops: the copy command's own run (curriculum at log points, checkpoints) and the
    PyTorch twin, from the same weights on the same 50 windows, agree on every loss and on the final weights."""
    from minidni.experiments import recurrent  # noqa: PLC0415

    torch.set_num_threads(1)
    args = recurrent.make_parser("copy").parse_args(
        ["--mode", mode, "--hidden", "32", "--batch", "8", "--steps", "50", "--log-every", "10",
         "--checkpoint-every", "25", "--no-compare", "--no-progress", "--out", str(tmp_path)])
    run = recurrent._Run(args, "copy", mode, tmp_path)
    theirs = TorchCopyTrainer(run.trainer)
    ours_window, next_window, losses = run.trainer.train_window, run.stream.next_window, []
    windows = []

    def recording_next_window(T):
        windows.append(next_window(T))
        return windows[-1]

    def train_both(x, loss_grad, **options):
        loss = ours_window(x, loss_grad, **options)
        w = windows[-1]
        losses.append((float(loss), float(theirs.train_window(w.x, w.target, w.mask, w.episode_end))))
        return loss

    run.stream.next_window, run.trainer.train_window = recording_next_window, train_both
    summary = run.train()
    assert summary["steps"] == 50 and len(losses) == 50 and (tmp_path / recurrent.CHECKPOINT).is_file()
    np.testing.assert_allclose([t for _, t in losses], [o for o, _ in losses], rtol=RTOL)
    mine = {"lstm.Wx": theirs.cell.weight_ih.T, "lstm.Wh": theirs.cell.weight_hh.T, "lstm.b": theirs.cell.bias_ih,
            "head.W": theirs.head.weight.T, "head.b": theirs.head.bias,
            **({"aux.W": theirs.aux.weight.T, "aux.b": theirs.aux.bias} if theirs.aux is not None else {})}
    for k, v in run.trainer.core_params.items():
        np.testing.assert_allclose(v, mine[k].detach().numpy(), rtol=1e-4, atol=1e-5, err_msg=k)
    if run.trainer.uses_sg:  # M learnt (it starts at zero) and learnt the same
        sg = run.trainer.sg.params
        assert np.abs(sg["W"]).max() > 1e-4
        np.testing.assert_allclose(sg["W"], theirs.sg.weight.T.detach().numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(sg["b"], theirs.sg.bias.detach().numpy(), rtol=1e-4, atol=1e-5)
    assert sum(w.episode_end.sum() for w in windows) > 8  # episodes ended (resets) across the 50 windows
