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
    except Exception as exc:  # empty, truncated, not a checkpoint, pickled code...
        raise UserError(f"{path}: not a loadable mnist_lightning checkpoint ({load_failure(path, exc)})") from exc
    try:
        net_spec(checkpoint)
    except Exception as exc:  # a PyTorch file of something else
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


NOT_A_CHECKPOINT = (
    "not a PyTorch checkpoint, or one that holds more than plain data; give a .ckpt file that training wrote"
)


def load_failure(path: str | Path, exc: Exception) -> str:
    """Why torch.load(weights_only=True) refused `path`, in the project's own words. Torch's advice for a refused file
    is to load it with weights_only=False, which runs whatever code the file holds: a file that is not a checkpoint
    must never lead anyone there. (Whatever torch raises, from its unpickler's KeyError on a text file to a damaged
    zip archive, means the same to the reader.)"""
    try:
        if Path(path).stat().st_size == 0:
            return "the file is empty: an interrupted copy or write? give a .ckpt file that training wrote"
    except OSError:
        pass
    if isinstance(exc, OSError) and exc.strerror:  # a folder, no permission to read...
        return f"it cannot be read: {exc.strerror}"
    return NOT_A_CHECKPOINT


def unreadable_reason(exc: Exception) -> str:
    """Why a file torch loaded is not a training checkpoint of this project (an entry missing or of another kind)."""
    if isinstance(exc, (KeyError, TypeError)):
        return f"a PyTorch file, but not a training checkpoint of this project (no {exc} entry)"
    return f"{exc.__class__.__name__}: {' '.join(str(exc).split())[:300]}"
