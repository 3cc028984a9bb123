"""Execute every teaching notebook in fast mode; a failing cell fails its test with the cell's error.

The notebooks are jupytext percent-format files ``notebooks/*.py`` (names starting
with ``_`` are skipped: they would be helpers, not notebooks). Each is converted
with :func:`jupytext.read` and run by nbclient in a fresh kernel with
``MINIDNI_FAST=1`` and the working directory ``notebooks/``. The kernel is this
interpreter (``sys.executable``) whatever the installed ``python3`` kernelspec
points at, and this checkout comes first on its ``PYTHONPATH``, so the notebooks
import the minidni under test (not another installed copy) and the same packages
as pytest.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext", reason="the notebook tests need the dev extra (jupytext)")
nbclient = pytest.importorskip("nbclient", reason="the notebook tests need the dev extra (nbclient)")
pytest.importorskip("ipykernel", reason="the notebook tests need the dev extra (ipykernel)")

from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402  (after the skips)
from jupyter_client.manager import AsyncKernelManager  # noqa: E402
from nbclient.exceptions import CellExecutionError  # noqa: E402
from traitlets import default  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(p for p in NOTEBOOK_DIR.glob("*.py") if not p.name.startswith("_"))
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")  # IPython colours its tracebacks
CELL_TIMEOUT_S = 900  # generous: a slow shared CI machine must not fail a correct notebook


def kernel_manager_class(spec_root: Path) -> type[AsyncKernelManager]:
    """A kernel manager class whose 'python3' kernel runs ``sys.executable -m ipykernel_launcher``.

    nbclient instantiates it (so it also shuts the kernel down and closes its sockets).
    """
    spec_dir = spec_root / "python3"
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (the test's interpreter)", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))

    class ThisInterpreter(AsyncKernelManager):
        @default("kernel_spec_manager")
        def _only_our_spec(self):
            return KernelSpecManager(kernel_dirs=[str(spec_root)], ensure_native_kernel=False)

    return ThisInterpreter


def figure_files(notebook: Path) -> dict[str, float]:
    """Modification times of the notebook's figures, figures/notebook_<NN>_*.png (fast mode must not write them).

    Only this notebook's own files are compared, so other programs writing into figures/
    meanwhile (experiments, a full-mode run of another notebook) cannot fail the test.
    """
    folder = ROOT / "figures"
    prefix = f"notebook_{notebook.name.split('_')[0]}_"
    return {p.name: p.stat().st_mtime for p in folder.glob(f"{prefix}*")} if folder.is_dir() else {}


def test_notebooks_are_found():
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_in_fast_mode(path, tmp_path, monkeypatch):
    monkeypatch.setenv("MINIDNI_FAST", "1")  # the kernel inherits this environment
    monkeypatch.delenv("MINIDNI_FIGURE_DIR", raising=False)  # with it, notebooks 3 and 4 save figures even when fast
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    notebook = jupytext.read(path)
    assert any(cell.cell_type == "markdown" for cell in notebook.cells), f"{path.name} has no Markdown cells"
    before = figure_files(path)
    client = nbclient.NotebookClient(notebook, kernel_manager_class=kernel_manager_class(tmp_path / "kernels"),
                                     kernel_name="python3", timeout=CELL_TIMEOUT_S,
                                     resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    failure = None
    try:
        client.execute()
    except CellExecutionError as err:  # its text holds the failing cell's source and traceback
        failure = ANSI_ESCAPE.sub("", str(err))
    if failure is not None:
        pytest.fail(f"{path.name}: a cell failed in fast mode (MINIDNI_FAST=1):\n{failure}", pytrace=False)
    assert figure_files(path) == before, f"{path.name} wrote into figures/ in fast mode"
