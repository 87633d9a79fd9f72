"""MNIST digit classification on PyTorch Lightning and Hydra."""

import os

from omegaconf import OmegaConf

__version__ = "0.1.0"

# ${pid:} in run folder names: two runs started in the same microsecond still get their own folders
if not OmegaConf.has_resolver("pid"):
    OmegaConf.register_new_resolver("pid", os.getpid)
