"""Which run folder each process of a multi-node launch uses, and how many nodes the launcher started, from the
environment torchrun and srun give their processes (tests/test_multinode.py runs real torchrun nodes)."""

from __future__ import annotations

import pytest

from mnist_lightning.cli import ranks

LAUNCHERS = ("RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "TORCHELASTIC_USE_AGENT_STORE")
SLURM = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_NNODES", "SLURM_JOB_ID", "SLURM_JOB_NAME", "SLURM_RESTART_COUNT")


@pytest.fixture(autouse=True)
def no_launcher(monkeypatch):
    for name in (*LAUNCHERS, *SLURM, *ranks.LIGHTNING_CLUSTER_VARIABLES):
        monkeypatch.delenv(name, raising=False)


def torchrun(monkeypatch, rank: int, world: int, per_node: int, agent_store: bool = True) -> None:
    for name, value in (("RANK", rank), ("WORLD_SIZE", world), ("LOCAL_WORLD_SIZE", per_node)):
        monkeypatch.setenv(name, str(value))
    monkeypatch.setenv("GROUP_RANK", str(rank // per_node))
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", str(agent_store))


def srun(monkeypatch, rank: int, tasks: int, nodes: int, restart: int = 0) -> None:
    env = {"SLURM_PROCID": rank, "SLURM_NTASKS": tasks, "SLURM_NNODES": nodes, "SLURM_JOB_ID": 4242}
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.setenv("SLURM_JOB_NAME", "mnist")
    if restart:
        monkeypatch.setenv("SLURM_RESTART_COUNT", str(restart))


def test_one_process_keeps_its_command_line_and_counts_one_node():
    assert ranks.shared_run_dir(["trainer.max_epochs=1"]) == ["trainer.max_epochs=1"]
    assert ranks.launched_nodes() == 1


def test_the_number_of_nodes_comes_from_the_launcher(monkeypatch):
    torchrun(monkeypatch, rank=5, world=8, per_node=4)
    assert ranks.launched_nodes() == 2
    for name in LAUNCHERS:
        monkeypatch.delenv(name)
    srun(monkeypatch, rank=0, tasks=6, nodes=3)
    assert ranks.launched_nodes() == 3


def test_torchrun_rank_zero_names_the_folder_and_a_named_folder_or_a_sweep_is_left_alone(monkeypatch):
    torchrun(monkeypatch, rank=0, world=2, per_node=1)
    assert ranks.shared_run_dir(["model=cnn"]) == ["model=cnn"]
    given = ["hydra.run.dir=/shared/run", "model=cnn", "hydra.output_subdir=.hydra/resume-1"]  # as a resume has it
    assert ranks.shared_run_dir(given) == given
    torchrun(monkeypatch, rank=1, world=2, per_node=1)
    assert ranks.shared_run_dir(given) == [  # the other ranks only log beside rank 0
        "hydra.run.dir=/shared/run",
        "model=cnn",
        "hydra.output_subdir=null",
        "hydra.job.name=train_rank_1",
    ]
    assert ranks.shared_run_dir(["-m", "seed=1,2"]) == ["-m", "seed=1,2"]


def test_torchrun_without_an_agent_store_asks_for_the_folder(monkeypatch):
    from mnist_lightning.errors import UserError

    torchrun(monkeypatch, rank=1, world=2, per_node=1, agent_store=False)
    with pytest.raises(UserError, match=r"rank 1: .*give every node the same hydra.run.dir"):
        ranks.shared_run_dir(["model=cnn"])


def test_srun_ranks_name_the_folder_after_the_job(monkeypatch):
    srun(monkeypatch, rank=0, tasks=2, nodes=2)
    assert ranks.shared_run_dir(["model=cnn"]) == ["model=cnn", "hydra.run.dir=${paths.outputs_root}/slurm-4242"]
    srun(monkeypatch, rank=1, tasks=2, nodes=2, restart=1)
    assert ranks.shared_run_dir(["model=cnn"]) == [
        "model=cnn",
        "hydra.run.dir=${paths.outputs_root}/slurm-4242-restart1",
        "hydra.output_subdir=null",
        "hydra.job.name=train_rank_1",
    ]
    monkeypatch.setenv("SLURM_STEP_ID", "3")  # a second srun in the same job gets a folder of its own
    assert ranks.shared_run_dir(["model=cnn"])[1] == "hydra.run.dir=${paths.outputs_root}/slurm-4242.3-restart1"
    srun(monkeypatch, rank=0, tasks=1, nodes=1)
    assert ranks.shared_run_dir(["model=cnn"]) == ["model=cnn"]  # one task: a run like any other
    monkeypatch.delenv("SLURM_NTASKS")  # python run by hand inside an sbatch script without --ntasks
    assert ranks.shared_run_dir(["model=cnn"]) == ["model=cnn"] and ranks.launched_rank() == (0, 1)


def test_a_number_of_nodes_other_than_the_launchers_is_refused_in_one_line(monkeypatch):
    from mnist_lightning.errors import UserError

    ranks.check_num_nodes(1)
    ranks.check_num_nodes(None)  # Lightning's default
    # several nodes, but nothing started the others: Lightning would wait for them forever
    with pytest.raises(UserError, match=r"trainer.num_nodes=3, but no launcher started this process, so the other"):
        ranks.check_num_nodes(3)
    monkeypatch.setenv("NODE_RANK", "0")  # Lightning's own launch on each node (MASTER_ADDR, NODE_RANK): its business
    ranks.check_num_nodes(3)
    monkeypatch.delenv("NODE_RANK")
    torchrun(monkeypatch, rank=0, world=2, per_node=1)
    ranks.check_num_nodes(2)
    with pytest.raises(UserError, match=r"trainer.num_nodes=3, but the launcher started 2 node\(s\): give"):
        ranks.check_num_nodes(3)


def test_a_resume_under_a_launcher_leaves_the_lock_check_to_rank_zero(monkeypatch, tmp_path):
    """Every rank expands ckpt_path=... into the run's folder; rank 0 may already hold the run's lock by then."""
    import json

    import torch

    from mnist_lightning.cli import argv
    from mnist_lightning.runs import lock

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- model=bn_cnn\n")
    (run / "checkpoints").mkdir()
    torch.save({"global_step": 1}, run / "checkpoints" / "last.ckpt")  # a PyTorch file: only its path is read here
    (run / lock.LOCK_FILE).write_text(json.dumps(lock.this_process()))  # rank 0 of this launch, alive
    monkeypatch.setenv(argv.RESUMED_ENV, "")  # expansion sets it; the test's end takes it away again
    torchrun(monkeypatch, rank=1, world=2, per_node=1)
    expanded = argv.resume_in_place([f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"])
    assert f"hydra.run.dir={run}" in expanded and "model=bn_cnn" in expanded
    monkeypatch.setenv(argv.RESUMED_ENV, "")
    torchrun(monkeypatch, rank=0, world=2, per_node=1)
    with pytest.raises(SystemExit):  # rank 0 itself: another process trains there
        argv.resume_in_place([f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"])
