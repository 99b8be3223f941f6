"""docs/tutorial.ipynb: generated from its text twin docs/tutorial.py (jupytext), committed without outputs, and
run top to bottom on the venv's own kernel with a tiny training budget."""

from __future__ import annotations

import sys
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers import REPO

NOTEBOOK = REPO / "docs" / "tutorial.ipynb"
SOURCE = REPO / "docs" / "tutorial.py"
REGENERATE = "edit docs/tutorial.py, then write the notebook anew with  jupytext --to ipynb docs/tutorial.py"


def test_the_notebook_is_its_text_twin_converted_without_outputs() -> None:
    committed = nbformat.read(NOTEBOOK, as_version=4)
    converted = jupytext.read(SOURCE)
    cells = [(cell.cell_type, cell.source) for cell in committed.cells]
    assert cells == [(cell.cell_type, cell.source) for cell in converted.cells], f"out of sync: {REGENERATE}"
    assert committed.metadata.kernelspec == converted.metadata.kernelspec
    with_outputs = [n for n, cell in enumerate(committed.cells) if cell.get("outputs") or cell.get("execution_count")]
    assert not with_outputs, f"cells {with_outputs} of docs/tutorial.ipynb hold outputs: {REGENERATE}"


@pytest.mark.slow
def test_the_notebook_runs_top_to_bottom(mnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every cell runs without an error (an assert in a cell fails the test), on this venv's python, training
    for a few steps on the tests' own copy of MNIST and writing its run under tmp_path."""
    for name, value in {
        "TUTORIAL_MAX_STEPS": "30",
        "TUTORIAL_DATA_DIR": str(mnist_dir),
        "TUTORIAL_LOG_DIR": str(tmp_path / "logs"),
        "CUDA_VISIBLE_DEVICES": "",  # the tutorial trains on the CPU; the rest follows it there
    }.items():
        monkeypatch.setenv(name, value)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell("import sys\nprint(sys.executable)"))  # which python ran it
    # kernel_name python3: the venv's ipykernel kernel spec, whose "python" jupyter_client runs as sys.executable.
    # A failing cell raises CellExecutionError, with the cell and its traceback.
    working_dir = {"metadata": {"path": str(tmp_path)}}
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources=working_dir).execute()

    outputs = [cell.outputs for cell in notebook.cells if cell.cell_type == "code"]
    assert outputs[-1][0].text.strip() == sys.executable
    assert [run.name for run in (tmp_path / "logs" / "tutorial" / "runs").iterdir()]  # it trained where told
    figures = sum("image/png" in output.get("data", {}) for cell in outputs for output in cell)
    assert figures == 4  # the reading figure, the gates, the row importance and the cell figure are shown
