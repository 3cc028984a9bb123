"""table1 runs its cells as processes (or Ray tasks) on the real MNIST when it is here; failed cells are listed."""

import json

import numpy as np
import pytest

from minidni.experiments import feedforward, table1


def tiny_dataset():
    rng = np.random.default_rng(0)
    return feedforward.Dataset(rng.random((96, 784), dtype=np.float32), rng.integers(0, 10, 96),
                               rng.random((40, 784), dtype=np.float32), rng.integers(0, 10, 40))


def test_cells_run_as_processes_on_real_mnist(shared_data_dir, tmp_path, capsys):
    common = ["--steps", "3", "--batch", "16", "--eval-every", "3", "--log-every", "3", "--sg-width", "4",
              "--data-dir", str(shared_data_dir), "--out", str(tmp_path / "runs"), "--figures", str(tmp_path / "fig")]
    assert table1.main(["--layers", "3", "--methods", "bprop", "cdni", "--workers", "2", "--executor", "processes",
                        *common]) == 0
    ours = json.loads((tmp_path / "fig" / "table1_mnist.json").read_text())["ours"]
    assert [(r["method"], r["steps"]) for r in ours] == [("bprop", 3), ("cdni", 3)]
    assert "as processes" in capsys.readouterr().err


def test_a_failed_run_is_listed_and_the_command_exits_1(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(feedforward.LOADERS, "mnist", lambda data_dir: tiny_dataset())
    argv = ["--layers", "3", "--methods", "bprop", "--steps", "3", "--batch", "16", "--lr", "1e30", "--log-every", "1",
            "--executor", "inline", "--out", str(tmp_path / "runs"), "--figures", str(tmp_path / "fig")]
    with np.errstate(all="ignore"):  # the run diverges on purpose
        assert table1.main(argv) == 1
    err = capsys.readouterr().err
    assert "1 runs failed" in err and "fcn3-bprop" in err and "python -m minidni.run mnist --model fcn" in err
    assert "Failed runs" in (tmp_path / "fig" / "table1_mnist.md").read_text()


@pytest.mark.parametrize("executor", ["processes", "inline"])
def test_ray_address_needs_the_ray_executor(tmp_path, capsys, executor):
    assert table1.main(["--executor", executor, "--ray-address", "127.0.0.1:1", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "--ray-address 127.0.0.1:1 needs --executor ray" in err and not (tmp_path / "o").exists()
