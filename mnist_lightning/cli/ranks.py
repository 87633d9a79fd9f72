"""One run folder for every process of a multi-node run, and the number of nodes the launcher started.

torchrun (`torch.distributed.run`, also what a Kubernetes PyTorchJob runs) starts the same command on every node,
one process per device, with RANK, WORLD_SIZE, LOCAL_WORLD_SIZE and a key-value store (TCPStore) served by its
agent at MASTER_ADDR:MASTER_PORT; SLURM's srun starts the processes itself with SLURM_PROCID, SLURM_NTASKS and
SLURM_JOB_ID. Left alone, Hydra would give each process a timestamped folder of its own. Under torchrun, rank 0
names the folder as usual and publishes it in the agent's store, and the other ranks wait for it before Hydra
starts; under srun, where no store exists before training, every rank names it after the job. The other ranks
write only their log (train_rank_<R>.log) into it: metrics.json, TensorBoard, the lock and the checkpoint files
are rank 0's.
"""

from __future__ import annotations

import datetime
import os

from mnist_lightning.errors import UserError

STORE_KEY = "mnist_lightning/run_dir"
WAIT_S = 600  # how long the other ranks wait for rank 0 to name the folder (its start-up, a slow file system)


def launched_nodes() -> int:
    """The number of nodes the launcher started (torchrun: WORLD_SIZE / LOCAL_WORLD_SIZE; srun: SLURM_NNODES);
    1 without one. `trainer.num_nodes` of trainer=ddp_multinode defaults to it."""
    env = os.environ
    if env.get("LOCAL_WORLD_SIZE") and env.get("WORLD_SIZE") and env.get("GROUP_RANK") is not None:
        return max(1, int(env["WORLD_SIZE"]) // int(env["LOCAL_WORLD_SIZE"]))
    if env.get("SLURM_NNODES") and _under_srun():
        return int(env["SLURM_NNODES"])
    return 1


# what Lightning's own multi-node launch reads on each node (its LightningEnvironment; Kubeflow's PyTorchJob sets
# MASTER_ADDR too), or LSF's job, which Lightning detects itself: with one of them set, several nodes without torchrun
# or srun are Lightning's business
LIGHTNING_CLUSTER_VARIABLES = ("MASTER_ADDR", "NODE_RANK", "LSB_JOBID")


def check_num_nodes(num_nodes) -> None:
    """Under torchrun or srun with several processes, `trainer.num_nodes` must be the number of nodes the launcher
    started (Lightning would stop with a traceback deep in its setup). Several nodes with no launcher and none of
    Lightning's cluster settings are refused too: Lightning would wait forever for the other nodes."""
    launched = launched_nodes()
    if not isinstance(num_nodes, int):
        return
    if launched_rank()[1] > 1 and num_nodes != launched:
        raise UserError(
            f"trainer.num_nodes={num_nodes}, but the launcher started {launched} node(s): give "
            f"trainer.num_nodes={launched}, or leave it out with trainer=ddp_multinode (it follows the launcher)"
        )
    unlaunched = launched_rank()[1] == 1 and not any(os.environ.get(k) for k in LIGHTNING_CLUSTER_VARIABLES)
    if num_nodes > 1 and unlaunched:
        raise UserError(
            f"trainer.num_nodes={num_nodes}, but no launcher started this process, so the other nodes would never "
            f"join: start the same command on every node with torchrun (or srun), as docs/distributed.md shows, or "
            f"train on this machine alone without trainer.num_nodes"
        )


def launched_rank() -> tuple[int, int]:
    """(this process's global rank, the number of processes) of a torchrun or srun launch; (0, 1) without one."""
    env = os.environ
    if _torchrun():
        return int(env["RANK"]), int(env["WORLD_SIZE"])
    if _under_srun():
        return int(env["SLURM_PROCID"]), int(env.get("SLURM_NTASKS") or 1)
    return 0, 1


def shared_run_dir(args: list[str]) -> list[str]:
    """The command line of this process, with the run folder that all ranks of a multi-node launch share."""
    from mnist_lightning.cli import overrides

    rank, world = launched_rank()
    if world <= 1 or "-m" in args or "--multirun" in args:
        return args  # one process, or a sweep (each job is its own run)
    given = {a.split("=", 1)[0].lstrip("+~") for a in args}
    if "hydra.run.dir" in given:  # named already (a resume, or the user's choice): the same for every rank
        if rank == 0:
            return args
        mine = {"hydra.output_subdir", "hydra.job.name"}  # a resume's .hydra/resume-<time> is rank 0's to write
        return [*(a for a in args if a.split("=", 1)[0].lstrip("+~") not in mine), *_not_rank_zero(rank)]
    if _torchrun():
        if rank == 0:
            return args  # names the folder as usual; publish_run_dir() tells the others
        return [*args, overrides.assign("hydra.run.dir", _wait_for_run_dir(rank)), *_not_rank_zero(rank)]
    job, step = os.environ["SLURM_JOB_ID"], os.environ.get("SLURM_STEP_ID")
    restart = int(os.environ.get("SLURM_RESTART_COUNT") or 0)  # a requeued job keeps its id
    name = "slurm-" + job + (f".{step}" if step else "") + (f"-restart{restart}" if restart else "")
    return [*args, "hydra.run.dir=${paths.outputs_root}/" + name, *(_not_rank_zero(rank) if rank else [])]


def publish_run_dir(run_dir: str) -> None:
    """On rank 0 of a torchrun launch: tell the other ranks the run folder (nothing otherwise)."""
    if _torchrun() and int(os.environ["WORLD_SIZE"]) > 1 and int(os.environ["RANK"]) == 0:
        store = _agent_store()
        if store is not None:
            store.set(_key(), str(run_dir))


def _not_rank_zero(rank: int) -> list[str]:
    # as Lightning names its own DDP processes: no .hydra of their own, a log file beside rank 0's train.log
    return ["hydra.output_subdir=null", f"hydra.job.name=train_rank_{rank}"]


def _torchrun() -> bool:
    env = os.environ
    return all(env.get(k) is not None for k in ("RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK"))


def _under_srun() -> bool:
    """Processes started by srun (not an interactive allocation, where one runs python by hand)."""
    env = os.environ
    return bool(env.get("SLURM_PROCID") and env.get("SLURM_JOB_ID")) and env.get("SLURM_JOB_NAME") not in (
        "bash",
        "interactive",
    )


def _key() -> str:
    # a restarted worker group (torchrun --max-restarts) gets a folder of its own
    return f"{STORE_KEY}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"


def _agent_store():
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    from torch.distributed import TCPStore

    return TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        is_master=False,
        timeout=datetime.timedelta(seconds=WAIT_S),
    )


def _wait_for_run_dir(rank: int) -> str:
    store = _agent_store()
    if store is None:
        raise UserError(
            f"rank {rank}: this torchrun launch has no agent store to share the run folder through; "
            f"give every node the same hydra.run.dir=... (on a file system all nodes see)"
        )
    try:
        store.wait([_key()], datetime.timedelta(seconds=WAIT_S))
    except Exception as exc:
        raise UserError(
            f"rank {rank}: rank 0 did not name the run folder within {WAIT_S} s ({exc.__class__.__name__}); "
            f"see rank 0's log, or give every node the same hydra.run.dir=..."
        ) from exc
    return store.get(_key()).decode()
