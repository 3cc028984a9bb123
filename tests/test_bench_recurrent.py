"""``python -m minidni.bench recurrent`` at tiny sizes: JSON keys, the GEMM list it replays, bad options.

No timing assertions: timings on shared machines are noise. The GEMM list is
checked against the matrix products the trainer really runs, recorded through
an ndarray subclass that logs every ``np.matmul``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from minidni import backend
from minidni.bench import recurrent as bench
from minidni.dni.recurrent import MODES, RecurrentTrainer, copy_loss
from minidni.tasks import CopyTaskStream, Curriculum


class _MatmulLog(np.ndarray):
    """An ndarray that records ``(m, k, n, a_transposed, b_transposed)`` of every matmul it takes part in."""

    log: list = []

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        plain = [i.view(np.ndarray) if isinstance(i, _MatmulLog) else i for i in inputs]
        outs = kwargs.get("out")
        if outs is not None:
            kwargs["out"] = tuple(o.view(np.ndarray) if isinstance(o, _MatmulLog) else o for o in outs)
        if ufunc is _REAL_MATMUL and method == "__call__":
            _log_matmul(*plain)
        result = getattr(ufunc, method)(*plain, **kwargs)
        if outs is not None:  # in place: the caller keeps its (logging) array
            return inputs[0] if method == "at" else outs[0]
        return result.view(_MatmulLog) if isinstance(result, np.ndarray) else result


def _log_matmul(a, b) -> None:
    # a transposed view of a C-ordered array is Fortran-ordered (and not C-ordered)
    _MatmulLog.log.append((a.shape[0], a.shape[1], b.shape[1],
                           not a.flags.c_contiguous and a.flags.f_contiguous,
                           not b.flags.c_contiguous and b.flags.f_contiguous))


def _explicit_matmul(a, b, *args, **kwargs):
    """``np.matmul(a, b, out=...)`` as the trainer calls it on workspace arrays: logged, then run on plain views."""
    _log_matmul(a, b)
    out = kwargs.get("out")
    if out is not None:
        kwargs["out"] = np.asarray(out)
    return _REAL_MATMUL(np.asarray(a), np.asarray(b), *args, **kwargs)


_REAL_MATMUL = np.matmul


def _recorded_window_gemms(mode: str, T: int, B: int, H: int, monkeypatch) -> list[tuple]:
    """Train two windows with every parameter logging; returns the products of the second (steady state).

    Products written with ``@`` are seen through the logging subclass, explicit
    ``np.matmul(..., out=...)`` calls (into workspace arrays) through a patched ``np.matmul``.
    """
    monkeypatch.setattr(np, "matmul", _explicit_matmul)
    tr = RecurrentTrainer(10, 9, H, mode=mode, rng=np.random.default_rng(0), dtype=np.float64)
    layers = list(tr.layers.values()) + ([tr.sg] if tr.uses_sg else [])
    for layer in layers:  # the same memory, seen through the logging subclass, everywhere params are held
        layer.params.update({k: v.view(_MatmulLog) for k, v in layer.params.items()})
    tr.core_params = {f"{n}.{k}": v for n, layer in tr.layers.items() for k, v in layer.params.items()}
    tr.opt.params = tr.core_params
    if tr.uses_sg:
        tr.sg_opt.params = tr.sg.params
    stream = CopyTaskStream(Curriculum("copy", start_length=2, max_length=2), B, rng=np.random.default_rng(1))
    for _ in range(2):
        _MatmulLog.log = []
        w = stream.next_window(T)
        x = w.x.astype(np.float64).view(_MatmulLog)
        tr.train_window(x, lambda logits: copy_loss(logits, w.target, w.mask), episode_end=w.episode_end)
    return _MatmulLog.log


@pytest.mark.parametrize("mode", MODES)
def test_replayed_gemms_are_the_trainers(mode, monkeypatch):
    T, B, H = 3, 5, 7  # distinct sizes, so a swapped dimension cannot pass
    expected = [tuple(g[1:]) for g in bench.window_gemms(mode, T, B, 10, H, 9)]
    assert _recorded_window_gemms(mode, T, B, H, monkeypatch) == expected


def test_gemm_flops_and_order():
    gemms = bench.window_gemms("dni-aux", T=2, B=3, D=4, H=5, C=6)
    assert gemms[0] == bench.Gemm("lstm x@Wx", 6, 4, 20) and gemms[0].flops == 2 * 6 * 4 * 20
    # forward T recurrent products, backward T, each 2*B*H*4H
    assert sum(g.flops for g in gemms if g.name in ("lstm h@Wh", "lstm dh")) == 2 * 2 * (2 * 3 * 5 * 20)
    assert len(bench.window_gemms("bptt", 2, 3, 4, 5, 6)) == len(gemms) - 7  # 3 SG + 4 aux products


def test_quick_bench_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["--quick", "--modes", "bptt", "dni-aux", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["config"]["quick"] and result["config"]["backend"] == "numpy"
    machine = result["machine"]
    assert len(machine["load_average_start"]) == 3 and len(machine["load_average_end"]) == 3
    assert machine["cupy_gpu_available"] == backend.cupy_available()
    assert [(r["mode"], r["batch"]) for r in result["runs"]] == [("bptt", 4), ("dni-aux", 4)]
    for r in result["runs"]:
        assert r["steps_per_second"] > 0 and r["gemm_seconds_per_step"] > 0
        assert r["gemm_fraction"] == pytest.approx(r["gemm_seconds_per_step"] / r["seconds_per_step"])
        assert r["gemm_fraction_cpu"] == pytest.approx(r["gemm_cpu_seconds_per_step"] / r["cpu_seconds_per_step"])
        gemms = bench.window_gemms(r["mode"], 3, 4, 10, 8, 9)
        assert r["gemm_flops_per_step"] == sum(g.flops for g in gemms) and r["gemms_per_step"] == len(gemms)
        assert r["profile_top"] and {"function", "own_ms_per_window", "cumulative_ms_per_window"} <= set(
            r["profile_top"][0])
        assert any("train_window" in p["function"] or "lstm" in p["function"] for p in r["profile_top"])
    text = capsys.readouterr().out
    assert "dni-aux" in text and "profile" in text and str(out) in text


@pytest.mark.parametrize("argv", [["--batch", "0"], ["--modes", "sgd"], ["--steps", "-1"], ["--T", "x"]])
def test_bad_options_exit_2(argv, capsys):
    assert bench.main(argv) == 2
    assert "error" in capsys.readouterr().err


def test_missing_cupy_is_one_line_exit_2(tmp_path, capsys):
    if backend.cupy_available():
        pytest.skip("CuPy with a GPU is available here: --backend cupy runs")
    assert bench.main(["--quick", "--backend", "cupy", "--out", str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err
    assert "cupy" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b.json").exists()
