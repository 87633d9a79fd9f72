"""MNIST digit classification on PyTorch Lightning and Hydra."""

import os

from omegaconf import OmegaConf

__version__ = "0.1.0"


def _launch_dir() -> str:
    """The folder the command was started from: Hydra's runtime.cwd inside a job, the current folder before one
    exists (a sweeper resolves the sweep folder, which lives under paths.outputs_root, before any job starts)."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.cwd if HydraConfig.initialized() else os.getcwd()


# ${pid:} in run folder names: two runs started in the same microsecond still get their own folders
if not OmegaConf.has_resolver("pid"):
    OmegaConf.register_new_resolver("pid", os.getpid)
# ${launch_dir:} in conf/paths/default.yaml
if not OmegaConf.has_resolver("launch_dir"):
    OmegaConf.register_new_resolver("launch_dir", _launch_dir)


def _launched_nodes() -> int:
    from mnist_lightning.cli.ranks import launched_nodes

    return launched_nodes()


# ${launched_nodes:} in conf/trainer/ddp_multinode.yaml: as many nodes as torchrun or srun started
if not OmegaConf.has_resolver("launched_nodes"):
    OmegaConf.register_new_resolver("launched_nodes", _launched_nodes)
