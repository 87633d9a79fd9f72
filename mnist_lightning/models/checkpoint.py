"""A network back from a training checkpoint, without Lightning and without running any code from the file.

Checkpoints store the network as `{"arch": name, **kwargs}` under `hyper_parameters.net` and its weights under
`state_dict` with the prefix `net.`; `torch.load(weights_only=True)` refuses anything but plain data.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mnist_lightning.errors import UserError
from mnist_lightning.models import build_network


def read(path: str | Path, map_location: str = "cpu") -> dict:
    """The checkpoint as plain data; raises UserError naming the file for anything that is not one."""
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
        net_spec(checkpoint)
    except Exception as exc:  # truncated, not a checkpoint, pickled code...
        raise UserError(f"{path}: not a loadable mnist_lightning checkpoint ({unreadable_reason(exc)})") from exc
    return checkpoint


def net_spec(checkpoint: dict) -> dict:
    """`{"arch": name, **arguments}`: the network a checkpoint holds, as training stored it."""
    return dict(checkpoint["hyper_parameters"]["net"])


def load_network(path: str | Path, map_location: str = "cpu") -> torch.nn.Module:
    """The network stored in a training checkpoint, in eval mode, on `map_location`."""
    return network_from(read(path, map_location), path, map_location)


def network_from(checkpoint: dict, path: str | Path, map_location: str = "cpu") -> torch.nn.Module:
    """The network of a checkpoint already `read` from `path` (named in errors), in eval mode."""
    try:
        network = build_network(**net_spec(checkpoint))
        prefix = "net."
        network.load_state_dict(
            {k.removeprefix(prefix): v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
        )
    except Exception as exc:  # another network's weights, an unknown architecture...
        raise UserError(f"{path}: not a loadable mnist_lightning checkpoint ({unreadable_reason(exc)})") from exc
    return network.to(map_location).eval()  # load_state_dict copies into the parameters' own device


def unreadable_reason(exc: Exception) -> str:
    """In the project's own words: torch's advice for a refused file is to load it with weights_only=False, which
    runs whatever code the file holds; a file that is not a checkpoint must never lead anyone there."""
    import pickle
    import zipfile

    if isinstance(exc, (pickle.UnpicklingError, zipfile.BadZipFile, EOFError)) or "weights_only" in str(exc):
        return "not a PyTorch checkpoint, or one that holds more than plain data; give a .ckpt file that training wrote"
    if isinstance(exc, (KeyError, TypeError)):
        return f"a PyTorch file, but not a training checkpoint of this project (no {exc} entry)"
    return f"{exc.__class__.__name__}: {' '.join(str(exc).split())[:300]}"
