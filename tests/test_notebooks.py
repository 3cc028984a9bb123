"""Execute every teaching notebook in fast mode; a failing cell fails its test with the cell's error.

The notebooks are jupytext percent-format files ``notebooks/*.py`` (every one is picked up;
names starting with ``_`` are skipped: they would be helpers, not notebooks). Each is
converted with :func:`jupytext.read` and run by nbclient in a fresh kernel with
``MINIDNI_FAST=1`` and ``MINIDNI_SOLUTIONS=1`` (exercises still left as TODO stubs are
graded with the reference solutions), from a temporary working directory outside the
checkout (a notebook must not look for the repository). The kernel is this interpreter
(``sys.executable``) whatever the installed ``python3`` kernelspec points at, and this
checkout comes first on its ``PYTHONPATH``, so the notebooks import the minidni under test
(not another installed copy) and the same packages as pytest.

Each notebook runs twice: on NumPy, and with ``MINIDNI_BACKEND=cupy`` (marker ``cupy``) on
real CuPy where a GPU is visible, else on the strict stand-in ``tests/strict_cupy``, which a
first cell puts into the kernel's ``sys.modules`` as ``cupy``.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

jupytext = pytest.importorskip("jupytext", reason="the notebook tests need the dev extra (jupytext)")
nbclient = pytest.importorskip("nbclient", reason="the notebook tests need the dev extra (nbclient)")
pytest.importorskip("ipykernel", reason="the notebook tests need the dev extra (ipykernel)")

from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402  (after the skips)
from jupyter_client.manager import AsyncKernelManager  # noqa: E402
from nbclient.exceptions import CellExecutionError  # noqa: E402
from nbformat.v4 import new_code_cell  # noqa: E402
from traitlets import default  # noqa: E402

from minidni.notebook import SOLUTIONS, ExerciseError, Notebook  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(p for p in NOTEBOOK_DIR.glob("*.py") if not p.name.startswith("_"))
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")  # IPython colours its tracebacks
CELL_TIMEOUT_S = 900  # generous: a slow shared CI machine must not fail a correct notebook
GRADED = re.compile(r"""nb\.grade\(\s*["']([^"']+)["']""")
BACKENDS = ["numpy", pytest.param("cupy", marks=pytest.mark.cupy)]


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
    meanwhile (experiments, a normal-mode run of another notebook) cannot fail the test.
    """
    folder = ROOT / "figures"
    prefix = f"notebook_{notebook.name.split('_')[0]}_"
    return {p.name: p.stat().st_mtime for p in folder.glob(f"{prefix}*")} if folder.is_dir() else {}


def execute(path: Path, tmp_path: Path, monkeypatch, *, standin: bool = False) -> None:
    """Run the notebook at ``path`` in a fresh kernel whose working directory is ``tmp_path/cwd``."""
    monkeypatch.setenv("MINIDNI_FAST", "1")  # the kernel inherits this environment
    monkeypatch.setenv("MINIDNI_SOLUTIONS", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    notebook = jupytext.read(path)
    assert any(cell.cell_type == "markdown" for cell in notebook.cells), f"{path.name} has no Markdown cells"
    if standin:  # the strict CuPy stand-in as the kernel's cupy, before anything imports minidni
        notebook.cells.insert(0, new_code_cell(
            f"import sys\nsys.path.insert(0, {str(TESTS)!r})\nimport strict_cupy\n"
            "_standin = strict_cupy.installed()  # kept referenced: collecting it would undo the install\n"
            "_standin.__enter__()  # for the kernel's lifetime"))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    client = nbclient.NotebookClient(notebook, kernel_manager_class=kernel_manager_class(tmp_path / "kernels"),
                                     kernel_name="python3", timeout=CELL_TIMEOUT_S,
                                     resources={"metadata": {"path": str(cwd)}})
    failure = None
    try:
        client.execute()
    except CellExecutionError as err:  # its text holds the failing cell's source and traceback
        failure = ANSI_ESCAPE.sub("", str(err))
    if failure is not None:
        env = ", ".join(f"{k}={os.environ[k]}" for k in ("MINIDNI_FAST", "MINIDNI_BACKEND") if k in os.environ)
        pytest.fail(f"{path.name}: a cell failed ({env}):\n{failure}", pytrace=False)


def test_notebooks_are_found():
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"


@pytest.mark.notebook
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_in_fast_mode(path, backend, tmp_path, monkeypatch, request):
    monkeypatch.delenv("MINIDNI_FIGURE_DIR", raising=False)  # with it, notebooks save figures even when fast
    standin = False
    if backend == "cupy":
        import strict_cupy  # noqa: PLC0415  (tests/ is on the import path)

        standin = request.getfixturevalue("cupy") is strict_cupy.module  # else real CuPy (or a skip)
        monkeypatch.setenv("MINIDNI_BACKEND", "cupy")
    else:
        monkeypatch.delenv("MINIDNI_BACKEND", raising=False)
    before = figure_files(path)
    execute(path, tmp_path, monkeypatch, standin=standin)
    assert figure_files(path) == before, f"{path.name} wrote into figures/ without MINIDNI_FIGURE_DIR"


@pytest.mark.notebook
def test_figures_go_to_minidni_figure_dir(tmp_path, monkeypatch):
    """With MINIDNI_FIGURE_DIR, a notebook saves its figures there as notebook_<NN>_<name>.png."""
    path = next(p for p in NOTEBOOKS if p.name.startswith("04_"))  # the quickest notebook
    monkeypatch.setenv("MINIDNI_FIGURE_DIR", str(tmp_path / "figs"))
    monkeypatch.delenv("MINIDNI_BACKEND", raising=False)
    execute(path, tmp_path, monkeypatch)
    saved = sorted(p.name for p in (tmp_path / "figs").glob("*.png"))
    assert "notebook_04_schematic.png" in saved and "notebook_04_surrogate_along_line.png" in saved, saved


def test_every_graded_exercise_has_a_reference_solution_and_every_solution_is_graded():
    graded = {name for path in NOTEBOOKS for name in GRADED.findall(path.read_text())}
    assert graded, "no notebook grades an exercise"
    assert graded == set(SOLUTIONS), (sorted(graded - set(SOLUTIONS)), sorted(set(SOLUTIONS) - graded))
    for path in NOTEBOOKS:  # a notebook with graded exercises has two or three, named after it
        names = GRADED.findall(path.read_text())
        assert not names or 2 <= len(names) <= 3, f"{path.name} grades {len(names)} exercises (2-3 expected)"
        assert all(name.startswith(path.name[:2] + ".") for name in names), names


def grader(monkeypatch, solutions: bool) -> Notebook:
    monkeypatch.setenv("MINIDNI_SOLUTIONS", "1" if solutions else "0")
    monkeypatch.delenv("MINIDNI_FIGURE_DIR", raising=False)
    return Notebook("01")


def todo(*args):
    raise NotImplementedError


CASES = [(np.random.default_rng(0).standard_normal((3, 4)), np.tanh(np.random.default_rng(1).standard_normal((3, 4))))]


def against(da, a):
    return da * (1 - a * a)


def test_grade_accepts_a_right_answer_and_rejects_a_wrong_one(monkeypatch):
    nb = grader(monkeypatch, solutions=False)
    assert nb.grade("01.tanh backward", lambda da, a: da * (1 - a**2), against=against, cases=CASES)
    with pytest.raises(ExerciseError, match="WRONG"):
        nb.grade("01.tanh backward", lambda da, a: da * (1 - a), against=against, cases=CASES)  # forgot the square
    with pytest.raises(ExerciseError, match="WRONG"):
        nb.grade("01.tanh backward", lambda da, a: (da * (1 - a**2))[:, :2], against=against, cases=CASES)  # shape


def test_grade_reports_a_todo_and_grades_the_reference_solution_with_the_switch(monkeypatch, capsys):
    assert grader(monkeypatch, solutions=False).grade("01.tanh backward", todo, against=against, cases=CASES) is False
    assert "not done yet" in capsys.readouterr().out
    assert grader(monkeypatch, solutions=True).grade("01.tanh backward", todo, against=against, cases=CASES)
    assert "reference solution" in capsys.readouterr().out
    with pytest.raises(ExerciseError):  # the switch grades the reference: a wrong 'package' answer still fails
        grader(monkeypatch, solutions=True).grade("01.tanh backward", todo, against=lambda da, a: da, cases=CASES)
