"""`python -m mnist_lightning.train` end to end on the real MNIST, in a subprocess like a user runs it."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from helpers import run_cli, run_dirs
from mnist_lightning.runs import lineage
from mnist_lightning.training.precision import auto_precision

pytestmark = pytest.mark.slow  # training runs of the CLI


def test_run_folder_has_everything(trained):
    _, run_dir, result = trained
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}/\d{2}-\d{2}-\d{2}-\d{6}-\d+", "/".join(run_dir.parts[-2:]))
    for name in (".hydra/config.yaml", ".hydra/overrides.yaml", "metrics.json", "train.log", "checkpoints/last.ckpt"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    names = sorted(p.name for p in (run_dir / "checkpoints").glob("epoch_*.ckpt"))
    assert len(names) == 2 and all(re.fullmatch(r"epoch_0[01]-val_acc_0\.\d{4}\.ckpt", n) for n in names), names
    output = result.stderr + result.stdout
    assert "] - Summary\n  run folder" in output and "test acc (best checkpoint)" in output
    assert "💡" not in output and "litlogger" not in output, "Lightning's tips are filtered out"
    assert not (run_dir / ".train.lock").exists(), "the run folder's lock is released at the end"


def test_last_checkpoint_holds_the_final_step(trained):
    """The run passed periodic saves (steps 100, 200) and epoch ends (150, 300): one last.ckpt, at step 300."""
    _, run_dir, _ = trained
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("last*")) == ["last.ckpt"]
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == json.loads((run_dir / "metrics.json").read_text())["global_step"] == 300
    assert last["epoch"] == 1


def test_metrics_json(trained):
    _, run_dir, _ = trained
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["state"] == "finished"
    assert metrics["test/acc"] > 0.95 and metrics["val/acc_best"] > 0.95
    assert (run_dir / metrics["best_checkpoint"]).is_file()
    assert metrics["model_version"] == lineage.sha256sum(run_dir / metrics["best_checkpoint"])[:12]
    assert metrics["epochs"] == 2 and metrics["global_step"] == 300 and metrics["seed"] == 42
    assert metrics["data_md5"]["train-images-idx3-ubyte"] == "6bbc9ace898e44ae57da46a324031adb"
    assert metrics["versions"]["torch"] and metrics["versions"]["lightning"] and metrics["wall_time_s"] > 0
    assert "git_commit" in metrics
    assert metrics["precision"] == auto_precision("auto")[0]  # what precision=auto promises for this hardware
    assert metrics["val_samples"] == metrics["val_split_size"] == 5000
    last_logged = metrics["last_logged"]
    assert last_logged["val/acc"] > 0.95 and last_logged["val/acc_best"] == metrics["val/acc_best"]
    assert len(metrics["epoch_time_s"]) == 2 and all(rate > 0 for rate in metrics["train_samples_per_s"])
    assert 0 < metrics["setup_s"] < metrics["wall_time_s"] and metrics["first_step_at"] > 0


def test_tensorboard_has_the_curves_and_hparams(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run_dir, _ = trained
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    expected = {"train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best", "test/loss", "test/acc"}
    assert expected <= tags, expected - tags
    assert any(tag.startswith("lr-") for tag in tags)
    hparams = events.summary_metadata  # the HParams plugin writes its session info as tensors
    assert any("hparams" in str(meta.plugin_data.plugin_name) for meta in hparams.values())


# A reload computes in the precision the run tested in: fp32 agrees to the last image; under bf16 autocast
# the kernels a batch size picks may round a borderline image the other way, so allow 10 of 10,000.
RELOAD_TOLERANCE = {"32-true": 1e-5, "bf16-mixed": 1e-3}


def test_best_checkpoint_reloads_and_reproduces_test_accuracy(trained, mnist_dir):
    from contextlib import nullcontext

    from mnist_lightning.data.datamodule import MNISTDataModule
    from mnist_lightning.data.transforms import normalize
    from mnist_lightning.models.lit_module import MNISTLitModule

    _, run_dir, _ = trained
    metrics = json.loads((run_dir / "metrics.json").read_text())
    model = MNISTLitModule.load_from_checkpoint(
        run_dir / metrics["best_checkpoint"], map_location="cpu", weights_only=True
    ).eval()
    datamodule = MNISTDataModule(data_dir=str(mnist_dir))
    datamodule.setup("test")
    images, labels = datamodule.test_set.images, datamodule.test_set.labels
    precision = metrics["precision"]
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16-mixed" else nullcontext()
    with torch.no_grad(), autocast:
        batches = images.split(datamodule.eval_batch_size_for("cpu"))  # the batches the run's test used
        predictions = torch.cat([model(normalize(chunk)).argmax(1) for chunk in batches])
    accuracy = (predictions == labels).float().mean().item()
    assert accuracy == pytest.approx(metrics["test/acc"], abs=RELOAD_TOLERANCE[precision])


def copy_of(trained, tmp_path) -> tuple[Path, Path]:
    """A copy of the shared trained project, so a resume (which writes into the run folder) leaves it alone."""
    cwd, run_dir, _ = trained
    shutil.copytree(cwd, tmp_path / "project")
    return tmp_path / "project", tmp_path / "project" / run_dir.relative_to(cwd)


def test_resume_continues_the_run_in_its_own_folder(trained, mnist_dir, tmp_path):
    """Resume the run as if it had stopped after its first epoch: only the second epoch is trained, in the same
    folder, with the run's own overrides, and its TensorBoard curves continue there."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cwd, run_dir = copy_of(trained, tmp_path)
    first = json.loads((run_dir / "metrics.json").read_text())
    (after_first_epoch,) = (run_dir / "checkpoints").glob("epoch_00-*.ckpt")
    events_before = set((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    result = run_cli("mnist_lightning.train", f"ckpt_path={after_first_epoch}", cwd=cwd, data_dir=mnist_dir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert run_dirs(cwd) == [run_dir]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["resumed_from"] == str(after_first_epoch.resolve())
    assert [r["from"] for r in metrics["resumes"]] == [str(after_first_epoch.resolve())]
    assert metrics["epochs"] == 2 and metrics["global_step"] == 300  # the saved limits came back with the run
    assert metrics["val/acc_best"] >= float(after_first_epoch.stem.split("val_acc_")[1]) - 1e-4  # best so far kept
    assert metrics["test/acc"] > 0.95 and abs(metrics["test/acc"] - first["test/acc"]) < 0.01
    assert (run_dir / ".hydra" / "overrides.yaml").read_text() == (trained[1] / ".hydra/overrides.yaml").read_text()
    assert list((run_dir / ".hydra").glob("resume-*/overrides.yaml"))
    steps = []
    for path in set((run_dir / "tensorboard").glob("events.out.tfevents.*")) - events_before:
        events = EventAccumulator(str(path))
        events.Reload()
        if "train/loss" in events.Tags()["scalars"]:
            steps += [event.step for event in events.Scalars("train/loss")]
    assert steps and min(steps) >= 150  # nothing of the first epoch was trained again


def test_resume_past_the_schedule_is_refused_with_a_clear_message(trained, mnist_dir, tmp_path):
    cwd, run_dir = copy_of(trained, tmp_path)
    before = (run_dir / "metrics.json").read_text()
    result = run_cli(
        "mnist_lightning.train", "ckpt_path=last", "trainer.max_epochs=3", cwd=cwd, data_dir=mnist_dir, timeout=300
    )
    assert result.returncode == 2
    assert "OneCycleLR spans 300 steps but this run would take 450" in result.stderr
    assert "Traceback" not in result.stderr
    assert json.loads((run_dir / "metrics.json").read_text())["state"] == json.loads(before)["state"] == "finished"


def test_deterministic_runs_give_identical_metrics_and_weights(tmp_path, mnist_dir):
    overrides = [
        "trainer.deterministic=true",
        "trainer.precision=32-true",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=30",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "logger=none",
        "callbacks.progress_bar=null",
        "trainer.enable_progress_bar=false",
        "seed=7",
    ]
    results = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        result = run_cli("mnist_lightning.train", *overrides, cwd=tmp_path / name, data_dir=mnist_dir, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        (run_dir,) = run_dirs(tmp_path / name)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        results.append((metrics, state))
    (first, first_state), (second, second_state) = results
    for key in ("val/acc_best", "test/acc", "test/loss", "global_step"):
        assert first[key] == second[key], key
    assert all(torch.equal(first_state[k], second_state[k]) for k in first_state)


TINY = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=5",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "scheduler=none",
    "logger=none",
    "trainer.enable_progress_bar=false",
    "callbacks.progress_bar=null",
]


def test_outputs_root_moves_runs_resume_and_lookups_together_even_with_spaces_commas_and_quotes(tmp_path, mnist_dir):
    """One setting moves every folder; a path needing quotes in Hydra's grammar survives the resume's overrides."""
    from hydra import compose, initialize_config_module

    from mnist_lightning.cli.overrides import assign
    from mnist_lightning.runs.resolve import resolve_model

    elsewhere = tmp_path / "my runs, 'v1'"
    root = assign("paths.outputs_root", elsewhere)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    result = run_cli("mnist_lightning.train", *TINY, root, cwd=cwd, data_dir=mnist_dir, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (cwd / "outputs").exists()
    (run_dir,) = [p.parent for p in elsewhere.glob("*/*/.hydra")]
    resumed = run_cli(
        "mnist_lightning.train",
        "ckpt_path=last",
        "trainer.max_epochs=3",
        root,
        cwd=cwd,
        data_dir=mnist_dir,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [p.parent for p in elsewhere.glob("*/*/.hydra")] == [run_dir] and not (cwd / "outputs").exists()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and metrics["resumes"][0]["from"] == str(run_dir / "checkpoints" / "last.ckpt")
    assert resolve_model(None, "latest", elsewhere).parent.parent == run_dir
    for verb in ("evaluate", "predict", "serve", "export", "register"):  # their own folders move with it
        with initialize_config_module("mnist_lightning.conf", version_base="1.3"):
            cfg = compose(verb, overrides=[root], return_hydra_config=True)
        assert cfg.hydra.run.dir.startswith(f"{elsewhere}/{verb}/"), verb


def test_no_test_split_and_checkpoints_outside_the_run_folder(tmp_path, mnist_dir):
    """trainer.limit_test_batches=0 skips the test; a checkpoint folder elsewhere is recorded by its full path."""
    elsewhere = tmp_path / "ckpts"
    result = run_cli(
        "mnist_lightning.train",
        *TINY,
        "trainer.limit_test_batches=0",
        f"callbacks.model_checkpoint.dirpath={elsewhere}",
        cwd=tmp_path,
        data_dir=mnist_dir,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = run_dirs(tmp_path)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["state"] == "finished" and metrics["test/acc"] is None and metrics["test/loss"] is None
    assert Path(metrics["best_checkpoint"]).parent == elsewhere.resolve()
    assert Path(metrics["best_checkpoint"]).is_file()


def test_a_crash_that_is_not_a_setting_records_the_failure(tmp_path, mnist_dir):
    """A StepLR of step 0 passes every check and divides by zero at its first step: a bug, shown with its
    traceback, and the run folder says it failed."""
    result = run_cli(
        "mnist_lightning.train",
        *TINY,
        "scheduler=step",
        "model.scheduler.step_size=0",
        "model.scheduler_interval=step",
        cwd=tmp_path,
        data_dir=mnist_dir,
        timeout=300,
    )
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "ZeroDivisionError" in result.stderr
    (run_dir,) = run_dirs(tmp_path)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["state"] == "failed" and metrics["error"].startswith("ZeroDivisionError")
    assert not (run_dir / ".train.lock").exists()
