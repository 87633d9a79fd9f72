"""Multi-node training as a cluster runs it: one torchrun agent per "node" on 127.0.0.1, each starting
`python -m mnist_lightning.train trainer=ddp_multinode` (gloo); one run folder, one model, a stop on one node
that stops both, and a resume on another number of nodes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import free_port, run_cli, run_dirs

pytestmark = pytest.mark.slow  # two training processes, twice

SMALL = [
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.precision=32-true",
    "logger=none",
    "trainer.enable_progress_bar=false",
]


def node(rank: int, nodes: int, port: int, cwd: Path, data_dir: Path, *overrides: str) -> subprocess.Popen:
    """`torchrun --nnodes=N --node_rank=R ... -m mnist_lightning.train trainer=ddp_multinode ...`, as on node R."""
    command = [
        *(sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}", "--nproc_per_node=1"),
        *(f"--node_rank={rank}", "--master_addr=127.0.0.1", f"--master_port={port}"),
        *("-m", "mnist_lightning.train", "trainer=ddp_multinode", *SMALL, *overrides),
    ]
    env = {**os.environ, "MNIST_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def both(processes: list[subprocess.Popen], timeout: int = 400) -> list[tuple[int, str]]:
    outputs = [p.communicate(timeout=timeout)[0] for p in processes]
    return [(p.returncode, output) for p, output in zip(processes, outputs, strict=True)]


def parameters(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]


def test_two_nodes_train_one_model_in_one_run_folder(tmp_path, mnist_dir):
    from mnist_lightning.models.checkpoint import load_network

    # no dropout: two ranks' batches of 32 then make exactly the steps of one process's batches of 64
    same = ["model.net.dropout1=0", "model.net.dropout2=0", "trainer.max_epochs=1", "trainer.limit_train_batches=8"]
    port, cwd = free_port(), tmp_path / "cluster"
    cwd.mkdir()
    nodes = [node(r, 2, port, cwd, mnist_dir, "trainer.num_nodes=2", "data.batch_size=32", *same) for r in (0, 1)]
    for code, output in both(nodes):
        assert code == 0, output[-4000:]

    (run_dir,) = run_dirs(cwd)  # one folder for both nodes
    assert sorted(p.name for p in run_dir.glob("*.log")) == ["train.log", "train_rank_1.log"]
    assert [p.name for p in run_dir.glob("*/metrics.json")] == [] and (run_dir / "metrics.json").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["state"] == "finished" and metrics["world_size"] == 2 and metrics["global_step"] == 8
    for rank, log in ((0, "train.log"), (1, "train_rank_1.log")):  # each rank trained on half of the images
        assert f"Rank {rank} of 2 trains on its own shard: 27500 of the 55000" in (run_dir / log).read_text()
    load_network(run_dir / metrics["best_checkpoint"])
    distributed = parameters(run_dir / "checkpoints" / "last.ckpt")

    alone = tmp_path / "alone"
    alone.mkdir()
    single = run_cli(
        "mnist_lightning.train", "trainer=cpu", *SMALL, "data.batch_size=64", *same, cwd=alone, data_dir=mnist_dir
    )
    assert single.returncode == 0, single.stderr[-4000:]
    (single_dir,) = run_dirs(alone)
    reference = parameters(single_dir / "checkpoints" / "last.ckpt")
    assert distributed.keys() == reference.keys()
    difference = max((distributed[k].float() - reference[k].float()).abs().max().item() for k in reference)
    assert difference < 1e-4, f"two nodes and one process with the same global batch differ by {difference}"


def test_a_signal_to_one_node_stops_both_and_the_run_resumes_on_one_node(tmp_path, mnist_dir):
    port, cwd = free_port(), tmp_path / "cluster"
    cwd.mkdir()
    long = ["model=bn_cnn", "data.batch_size=32", "trainer.max_epochs=2", "trainer.limit_train_batches=400"]
    nodes = [node(r, 2, port, cwd, mnist_dir, *long) for r in (0, 1)]  # num_nodes: as many as torchrun started
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not any(
        "Rank 1 of 2 trains" in p.read_text() for p in cwd.glob("outputs/*/*/train_rank_1.log")
    ):
        assert all(n.poll() is None for n in nodes), both(nodes)[0][1][-3000:]
        time.sleep(0.5)
    time.sleep(3)  # some batches into the first epoch
    nodes[1].send_signal(signal.SIGTERM)  # node 1 is pre-empted: torchrun passes SIGTERM to its worker
    results = both(nodes)
    assert all(code != 0 for code, _ in results), "an interrupted run does not exit as finished"

    (run_dir,) = run_dirs(cwd)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["state"] == "interrupted", metrics
    assert "SIGTERM received" in (run_dir / "train_rank_1.log").read_text()
    last = run_dir / "checkpoints" / "last.ckpt"
    stopped_at = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    assert 0 < stopped_at < 400

    # the same run goes on as one process on one node, from the last state both nodes saved together
    resumed = node(0, 1, free_port(), cwd, mnist_dir, f"ckpt_path={last}")
    ((code, output),) = both([resumed])
    assert code == 0, output[-4000:]
    assert run_dirs(cwd) == [run_dir]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["state"] == "finished" and metrics["world_size"] == 1 and metrics["epochs"] == 2
    assert len(metrics["resumes"]) == 1 and metrics["global_step"] > stopped_at
    assert "Resuming on 1 ranks instead of the checkpoint's" in output  # the epoch's batch count restated


def test_srun_tasks_train_through_lightnings_slurm_environment(tmp_path, mnist_dir):
    """Two tasks with the environment srun gives them (no SLURM here: the variables are set by hand), so Lightning
    takes its SLURM cluster environment; the run folder is named after the job."""
    port = free_port()
    tasks = []
    for rank in (0, 1):
        slurm = {"SLURM_NTASKS": "2", "SLURM_NNODES": "2", "SLURM_NTASKS_PER_NODE": "1", "SLURM_JOB_NAME": "mnist"}
        slurm |= {"SLURM_JOB_ID": "4242", "SLURM_PROCID": str(rank), "SLURM_LOCALID": "0", "SLURM_NODEID": str(rank)}
        slurm |= {"SLURM_NODELIST": "127.0.0.1", "MASTER_PORT": str(port)}
        env = {**os.environ, **slurm, "MNIST_DATA_DIR": str(mnist_dir), "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, "-m", "mnist_lightning.train", "trainer=ddp_multinode", *SMALL]
        command += ["model=bn_cnn", "trainer.max_epochs=1", "trainer.limit_train_batches=6"]
        tasks.append(
            subprocess.Popen(
                command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    for code, output in both(tasks):
        assert code == 0, output[-4000:]
    run_dir = tmp_path / "outputs" / "slurm-4242"
    assert run_dirs(tmp_path) == [] and (run_dir / ".hydra").is_dir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["state"] == "finished" and metrics["world_size"] == 2 and metrics["global_step"] == 6
    assert "Rank 1 of 2 trains on its own shard" in (run_dir / "train_rank_1.log").read_text()
    assert "SLURM auto-requeueing enabled" in (run_dir / "train.log").read_text()  # Lightning's SLURM environment


def test_several_nodes_without_a_launcher_are_refused_in_one_line(tmp_path, mnist_dir, monkeypatch):
    """Started by hand, as on one machine: Lightning would wait forever for the other node."""
    from mnist_lightning.cli import ranks

    for name in ("RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "SLURM_PROCID", *ranks.LIGHTNING_CLUSTER_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    result = run_cli(
        "mnist_lightning.train",
        "trainer=ddp_multinode",
        "trainer.num_nodes=2",
        *SMALL,
        cwd=tmp_path,
        data_dir=mnist_dir,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "trainer.num_nodes=2, but no launcher started this process, so the other nodes would never join" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr and "Initializing distributed" not in result.stderr
