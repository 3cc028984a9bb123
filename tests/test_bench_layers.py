"""Smoke test of ``python -m minidni.bench layers`` at tiny sizes: it runs and writes valid JSON.

No timing assertions: timings on shared machines are noise.
"""

from __future__ import annotations

import json

from minidni import backend
from minidni.bench import layers


def test_quick_bench_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert layers.main(["--quick", "--repeats", "1", "--warmup", "0", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["backend"] == "numpy" and result["sizes"] == "quick"
    assert set(result["reference_gemms"]) == {"square_gemm", "lstm_gemm"}
    # Analytic FLOPs of the quick sizes: 2*N*D*M, 2*F*(C*K*K)*(N*OH*OW), T*2*N*4H*(D+H).
    expected = {"Linear": 2 * 8 * 12 * 6, "Conv2d": 2 * 4 * (3 * 3 * 3) * (2 * 6 * 6), "LSTM": 2 * 2 * 3 * 20 * (4 + 5)}
    for name, flops in expected.items():
        row = result["layers"][name]
        assert row["forward_flops"] == flops and row["forward_backward_flops"] == 3 * flops
        assert row["forward_backward"]["seconds"] > 0 and row["ratio_to_square_gemm"] > 0
    assert result["machine"]["numpy"] and result["machine"]["cpu_count"] >= 1
    assert "LSTM" in capsys.readouterr().out


def test_bad_options_exit_2(tmp_path, capsys):
    assert layers.main(["--repeats", "0"]) == 2
    assert "--repeats: 0 is out of range (accepted: an integer from 1 to" in capsys.readouterr().err
    if not backend.cupy_available():
        assert layers.main(["--quick", "--backend", "cupy", "--out", str(tmp_path / "b.json")]) == 2
        assert "cupy" in capsys.readouterr().err
