"""`python -m mnist_lightning.promote` on a real MLflow registry (SQLite, in a temporary project) and a real
prediction log: the champion alias moves only on a `candidate better` verdict, or with force=true, and the
decision is recorded on the version."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from helpers import run_cli, tiny_run
from mnist_lightning.errors import UserError
from mnist_lightning.inference.model import LoadedModel
from mnist_lightning.promote import promote
from mnist_lightning.runs import registry
from mnist_lightning.serving.ab import experiment_name
from mnist_lightning.store.log import Answer, PredictionLog

pytestmark = pytest.mark.slow  # the commands run as subprocesses, on a real MLflow store
NAME = "mnist-mlp"


@pytest.fixture
def project(tmp_path) -> tuple[Path, dict[str, str]]:
    """A project whose registry has v1 as champion and v2 as challenger; their model versions by alias."""
    outputs = tmp_path / "outputs"
    versions = {}
    for seed, alias in ((0, "champion"), (1, "challenger")):
        checkpoint = tiny_run(tmp_path / f"run{seed}", seed=seed)
        model = LoadedModel.load(checkpoint)
        registry.register(checkpoint, NAME, alias, outputs, None, {"model_version": model.version})
        versions[alias] = model.version
    return tmp_path, versions


def label(project_dir: Path, versions: dict[str, str], right: dict[str, int], total: int) -> None:
    """`total` labelled answers per model in the project's prediction log, `right[alias]` of them right."""
    log = PredictionLog(f"sqlite:///{project_dir}/outputs/serving.db")
    experiment = experiment_name(versions["champion"], versions["challenger"])  # as serve files them
    for alias, version in versions.items():
        logged = [
            Answer(uuid.uuid4().hex, version, "main", 1, 0.9, None, None, experiment=experiment) for _ in range(total)
        ]
        log.record(logged)
        for n, answer in enumerate(logged):
            log.add_feedback(answer.request_id, 1 if n < right[alias] else 2)
    log.close()


def config(project_dir: Path, **given):
    return OmegaConf.create(
        {
            "paths": {"outputs_root": str(project_dir / "outputs")},
            "name": None,
            "candidate": "challenger",
            "alias": "champion",
            "force": False,
            "store": {"url": f"sqlite:///{project_dir}/outputs/serving.db"},
            "ab": {"alpha": 0.05, "first_look": 100},
            **given,
        }
    )


def champion(project_dir: Path):
    return registry.find_version(f"registry:{NAME}@champion", project_dir / "outputs")


def test_an_undecided_test_promotes_nothing_unless_forced(project, mnist_dir):
    project_dir, versions = project
    label(project_dir, versions, {"champion": 55, "challenger": 58}, total=60)  # before the first look
    refused = run_cli("mnist_lightning.promote", cwd=project_dir, data_dir=mnist_dir)
    assert refused.returncode == 2, refused.stderr[-2000:]
    (line,) = [text for text in refused.stderr.splitlines() if "not promoted" in text]
    assert f"{NAME} v2 (challenger) against v1 (champion) is undecided" in line
    assert "accuracy 0.9667 vs 0.9167 on 60 and 60 labels" in line and "force=true promotes it anyway" in line
    assert "Traceback" not in refused.stderr and int(champion(project_dir).version) == 1

    with pytest.raises(UserError, match="is undecided"):
        promote(config(project_dir))
    record = promote(config(project_dir, force=True))
    assert record["forced"] is True and record["verdict"] == "undecided"
    promoted = champion(project_dir)
    assert int(promoted.version) == 2 and json.loads(promoted.tags["promotion"])["forced"] is True


def test_a_better_candidate_is_promoted_and_the_decision_recorded(project, mnist_dir):
    project_dir, versions = project
    label(project_dir, versions, {"champion": 80, "challenger": 98}, total=100)
    result = run_cli("mnist_lightning.promote", f"name={NAME}", cwd=project_dir, data_dir=mnist_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"promoted        {NAME} v2 (model {versions['challenger']}) to champion" in result.stderr
    assert "candidate better: at look 1, accuracy 0.9800 vs 0.8000 on 100 and 100 labels" in result.stderr
    promoted = champion(project_dir)
    record = json.loads(promoted.tags["promotion"])
    assert int(promoted.version) == 2 and record["verdict"] == "candidate better" and record["forced"] is False
    assert int(record["replaced_version"]) == 1 and record["decision"]["p_value"] < 0.025
    again = run_cli("mnist_lightning.promote", cwd=project_dir, data_dir=mnist_dir)
    assert again.returncode == 2 and "is champion and challenger already: nothing to promote" in again.stderr
