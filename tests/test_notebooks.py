"""The notebooks run top to bottom, as a reader runs them, on a copy of the tests' trained and exported project."""

from __future__ import annotations

import shutil

import nbformat
import pytest
from nbclient import NotebookClient

from helpers import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# a line each notebook prints when it got to its point
SAYS = {
    "01_data": "training pixels: mean 0.13",
    "02_runs": "test digits are wrong",
    "03_inference": "ONNX Runtime:",
    "04_lifecycle": "alert",
}


def test_the_learning_path_is_four_notebooks_committed_without_outputs():
    assert [p.stem for p in NOTEBOOKS] == sorted(SAYS)
    for path in NOTEBOOKS:
        book = nbformat.read(path, as_version=4)
        nbformat.validate(book)
        for cell in book.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name}: clear its outputs"


@pytest.fixture(scope="module")
def project(exported, tmp_path_factory):
    """A copy: notebook 04 registers models into the project's outputs/."""
    cwd, _, _, _ = exported
    copy = tmp_path_factory.mktemp("notebooks") / "project"
    shutil.copytree(cwd, copy)
    return copy


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, project, mnist_dir, monkeypatch):
    monkeypatch.setenv("MNIST_DATA_DIR", str(mnist_dir))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    book = nbformat.read(path, as_version=4)
    # a failing cell raises CellExecutionError, with the cell and its traceback
    NotebookClient(book, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(project)}}).execute()
    printed = "".join(
        output.get("text", "") for cell in book.cells if cell.cell_type == "code" for output in cell.outputs
    )
    assert SAYS[path.stem] in printed, printed[-2000:]
