"""The notebooks run top to bottom, as a reader runs them: on a copy of the tests' trained and exported project
(the seed CNN), and those that read outputs/ also on a project unlike it, so that nothing in them may assume the
fixture's network, logger, export or number of runs. Neither project's outputs/ may change."""

from __future__ import annotations

import re
import shutil

import pytest

from helpers import ROOT, run_cli
from mnist_lightning.models.checkpoint import read
from mnist_lightning.runs.resolve import resolve_model

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# a line each notebook prints when it got to its point
SAYS = {
    "01_data": "training pixels: mean 0.13",
    "02_runs": "test digits are wrong",
    "03_inference": "ONNX Runtime:",
    "04_lifecycle": "alert",
}
# the notebooks that read the project's outputs/ (01 reads only the data files)
READ_OUTPUTS = ("02_runs", "03_inference", "04_lifecycle")
# one epoch without TensorBoard events, tested on 2 batches: only validation decides which run is best
QUICK = [
    "trainer.max_epochs=1",
    "trainer.limit_test_batches=2",
    "logger=none",
    "callbacks.progress_bar=null",
    "trainer.enable_progress_bar=false",
]


def outputs_files(project) -> dict[str, tuple[int, int]]:
    """Every file under the project's outputs/, with its size and modification time."""
    outputs = project / "outputs"
    return {
        str(p.relative_to(outputs)): (p.stat().st_size, p.stat().st_mtime_ns) for p in outputs.rglob("*") if p.is_file()
    }


def ab_decision(printed: str) -> tuple[str, bool]:
    """Notebook 04's A/B verdict as it printed it, and whether it promoted."""
    found = re.search(r"verdict: (candidate better|candidate worse|undecided) \(p=", printed)
    assert found, printed[-2000:]
    promoted, kept = "decision: promote the challenger" in printed, "decision: keep the champion" in printed
    assert promoted != kept, printed[-2000:]
    return found.group(1), promoted


@pytest.fixture(scope="module")
def seed_cnn_project(exported, tmp_path_factory):
    """A copy of the shared project: one seed-CNN run of two epochs (a checkpoint each), logged to TensorBoard,
    its best checkpoint exported."""
    cwd, _, _, _ = exported
    copy = tmp_path_factory.mktemp("notebooks") / "project"
    shutil.copytree(cwd, copy)
    return copy


@pytest.fixture(scope="module")
def other_project(tmp_path_factory, mnist_dir):
    """Two runs of other networks, neither exported nor logged: first a bn_cnn trained on 8 batches and validated
    on the whole split (the best run, and a weak one), then an MLP trained on 100 batches but validated on 2
    (not comparable, so never `best`): notebook 04's challenger, far more accurate than its champion."""
    cwd = tmp_path_factory.mktemp("other_project")
    for overrides in (
        ["model=bn_cnn", "trainer.limit_train_batches=8"],
        ["model=mlp", "trainer.limit_train_batches=100", "trainer.limit_val_batches=2"],
    ):
        result = run_cli("mnist_lightning.train", *QUICK, *overrides, cwd=cwd, data_dir=mnist_dir)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    best = resolve_model(None, "best", cwd / "outputs")
    assert read(best)["hyper_parameters"]["net"]["arch"] == "bn_cnn"
    return cwd


def test_the_learning_path_is_four_notebooks_committed_without_outputs():
    assert [p.stem for p in NOTEBOOKS] == sorted(SAYS)
    import nbformat  # here, not at the top: it takes seconds to import, and every pytest worker collects this file

    for path in NOTEBOOKS:
        book = nbformat.read(path, as_version=4)
        nbformat.validate(book)
        for cell in book.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name}: clear its outputs"


@pytest.fixture
def project(request):
    """The project a notebook runs on, named by the test's parameter (so its making counts as setup)."""
    return request.getfixturevalue(request.param)


CASES = [pytest.param(p, "seed_cnn_project", id=f"{p.stem}-seed_cnn") for p in NOTEBOOKS] + [
    pytest.param(p, "other_project", id=f"{p.stem}-bn_cnn") for p in NOTEBOOKS if p.stem in READ_OUTPUTS
]


@pytest.mark.slow
@pytest.mark.parametrize(("path", "project"), CASES, indirect=["project"])
def test_notebook_runs_top_to_bottom(path, project, request, mnist_dir, monkeypatch):
    monkeypatch.setenv("MNIST_DATA_DIR", str(mnist_dir))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    import nbformat  # as above
    from nbclient import NotebookClient

    before = outputs_files(project)
    book = nbformat.read(path, as_version=4)
    # a failing cell raises CellExecutionError, with the cell and its traceback
    NotebookClient(book, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(project)}}).execute()
    printed = "".join(
        output.get("text", "") for cell in book.cells if cell.cell_type == "code" for output in cell.outputs
    )
    assert SAYS[path.stem] in printed, printed[-2000:]
    # notebook 04 registers into a scratch store: the project's outputs/ gets no mlflow.db, no export, nothing
    assert outputs_files(project) == before, "the notebook changed the project's outputs/"
    if path.stem == "04_lifecycle":
        verdict, promoted = ab_decision(printed)
        assert promoted == (verdict == "candidate better"), printed[-2000:]  # it follows the verdict it shows
        if request.node.callspec.params["project"] == "other_project":  # the name follows the champion's network
            assert "'name': 'mnist-bn_cnn'" in printed and "mnist-cnn" not in printed, printed[-2000:]
            assert promoted, printed[-2000:]
