"""Data-parallel training on the CPU: trainer=ddp_cpu (2 processes, gloo) end to end."""

from __future__ import annotations

import json

import pytest

from helpers import run_cli, run_dirs

pytestmark = pytest.mark.slow  # two training processes


def test_ddp_cpu_trains_on_disjoint_shards_and_rank_zero_writes_the_results(tmp_path, mnist_dir):
    from mnist_lightning.models.checkpoint import load_network

    result = run_cli(
        "mnist_lightning.train",
        "trainer=ddp_cpu",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=10",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "callbacks.progress_bar=null",
        "trainer.enable_progress_bar=false",
        cwd=tmp_path,
        data_dir=mnist_dir,
        timeout=400,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    (run_dir,) = run_dirs(tmp_path)  # both processes wrote into one run folder
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["state"] == "finished" and metrics["world_size"] == 2
    # each process takes 10 batches of its own half per epoch; the optimizer steps in lockstep
    assert metrics["global_step"] == 20 and metrics["epochs"] == 2
    assert metrics["test/acc"] > 0.5
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt")) == sorted(
        ["last.ckpt", metrics["best_checkpoint"].split("/")[-1]]
    )
    network = load_network(run_dir / metrics["best_checkpoint"])  # reloads like a single-process run
    assert sum(p.numel() for p in network.parameters()) > 1_000_000
    assert (run_dir / "train_ddp_process_1.log").is_file()  # rank 1 logs beside rank 0, in the same folder
