"""Files written whole or not at all: a temporary file beside the target, fsynced, renamed over it.

Written by hand: no well-kept library does this for arbitrary writers (torch.save, text) with fsync of
the file and the folder and the permissions the umask gives a new file.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write(path: str | Path, writer: Callable[[BinaryIO], object]) -> None:
    """`writer(file)` into a temporary file in the same folder, flush, fsync, rename over `path`.

    Readers and a process killed at any moment see the old file or the new one, never half a file.
    The file gets the permissions the umask gives any new file (mkstemp's 0600 would survive the rename).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_text(path: str | Path, text: str) -> None:
    write(path, lambda f: f.write(text.encode()))


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
