"""Networks by name. Checkpoints store the name and its keyword arguments, never pickled code.

`cnn.py`, `bn_cnn.py` and `mlp.py` are plain nn.Modules; `lit_module.py` is the LightningModule that trains any of
them; `checkpoint.py` loads one back from a checkpoint without Lightning.
"""

from torch import nn

from mnist_lightning.models.bn_cnn import BatchNormCNN
from mnist_lightning.models.cnn import SeedCNN
from mnist_lightning.models.mlp import MLP

NETWORKS: dict[str, type[nn.Module]] = {"cnn": SeedCNN, "bn_cnn": BatchNormCNN, "mlp": MLP}


def build_network(arch: str, **kwargs) -> nn.Module:
    if arch not in NETWORKS:
        raise ValueError(f"arch={arch!r}: unknown network, choose one of {', '.join(NETWORKS)}")
    try:
        return NETWORKS[arch](**kwargs)
    except TypeError as exc:  # an unknown or missing keyword
        raise ValueError(f"arch={arch!r}: {exc}") from exc
