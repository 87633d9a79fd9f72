"""Who trains in a run folder: a lock file held by that process, so no second process trains into it.

Written by hand: file-lock libraries (filelock, fcntl) release on exit but cannot name the holder; this
lock records pid, host and process start time, so a refusal says who holds it and a lock left by a
killed process is recognised as stale.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
from pathlib import Path

from mnist_lightning.errors import UserError

LOCK_FILE = ".train.lock"


class RunLocked(UserError):
    """Another live process is training in this run folder."""


def _process_start(pid: int) -> str | None:
    """The start time of process `pid` in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def this_process() -> dict:
    """{pid, host, started}: enough to tell later whether this process still runs."""
    return {"pid": os.getpid(), "host": platform.node(), "started": _process_start(os.getpid())}


def process_alive(holder: dict) -> bool:
    """Whether the process that wrote a lock still runs (always assumed for another host: it cannot be checked)."""
    if holder.get("host") != platform.node():
        return True
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    started = _process_start(pid)
    return started is None or holder.get("started") in (None, started)


def lock_holder(run_dir: str | Path) -> dict | None:
    """The live process training in `run_dir` ({pid, host, started}), or None (no lock, or a stale one)."""
    try:
        holder = json.loads((Path(run_dir) / LOCK_FILE).read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) and process_alive(holder) else None


def in_use_message(run_dir: Path, holder: dict) -> str:
    return (
        f"{run_dir} is in use: process {holder.get('pid')} on {holder.get('host')} is training there. Wait for it "
        f"to finish or stop it (a stopped run can then be resumed); if no such process exists, delete "
        f"{run_dir / LOCK_FILE}."
    )


class RunLock:
    """Held by the process that trains in a run folder, so no second process trains into it.

    The lock is a file with the holder's pid, host and process start time, created atomically.
    A lock whose process is gone (killed, crashed, machine restarted) is stale and is taken over.
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.held = False

    def acquire(self) -> RunLock:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # written in full beside the lock, then hard-linked into place: the lock never exists half-written
        mine = self.path.with_name(f"{LOCK_FILE}.{secrets.token_hex(4)}.tmp")
        mine.write_text(json.dumps(this_process()))
        try:
            for _ in range(5):
                try:
                    os.link(mine, self.path)
                except FileExistsError:
                    self._take_over_if_stale()
                    continue
                self.held = True
                return self
        finally:
            mine.unlink(missing_ok=True)
        raise RunLocked(in_use_message(self.run_dir, lock_holder(self.run_dir) or {}))

    def _take_over_if_stale(self) -> None:
        holder = lock_holder(self.run_dir)
        if holder is not None:
            raise RunLocked(in_use_message(self.run_dir, holder))
        # move the stale file aside (only one of several racing processes can), then check it was the stale one
        aside = self.path.with_name(f"{LOCK_FILE}.{secrets.token_hex(4)}.stale")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # another process moved it first: try to create ours again
        try:
            moved = json.loads(aside.read_text())
        except (OSError, ValueError):
            moved = {}
        if isinstance(moved, dict) and process_alive(moved):  # a fresh lock was created in between: put it back
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
            aside.unlink(missing_ok=True)
            raise RunLocked(in_use_message(self.run_dir, moved))
        aside.unlink(missing_ok=True)

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
