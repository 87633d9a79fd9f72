"""The run-folder contract: what a run writes, where, and how to find runs and checkpoints again.

A run folder holds `.hydra/` (composed config and overrides), `checkpoints/` (best by val/acc and
`last.ckpt`), TensorBoard events, the log file and `metrics.json`. Everything that reads or writes
those paths goes through this module.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import secrets
import subprocess
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import BinaryIO

from mnist_lightning.errors import UserError

METRICS_FILE = "metrics.json"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
PACKAGES = ("torch", "torchvision", "lightning", "torchmetrics", "hydra-core", "omegaconf")


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """`write(file)` into a temporary file in the same folder, flush, fsync, rename over `path`.

    Readers and a process killed at any moment see the old file or the new one, never half a file.
    The file gets the permissions the umask gives any new file (mkstemp's 0600 would survive the rename).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


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


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def write_metrics(run_dir: str | Path, metrics: dict) -> Path:
    path = Path(run_dir) / METRICS_FILE
    atomic_write_text(path, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return path


def path_in_run(path: str | Path, run_dir: str | Path) -> str:
    """`path` relative to the run folder when it lies inside it (the folder can move), else absolute."""
    path, run_dir = Path(path).resolve(), Path(run_dir).resolve()
    return str(path.relative_to(run_dir)) if path.is_relative_to(run_dir) else str(path)


def read_metrics(run_dir: str | Path) -> dict | None:
    try:
        return json.loads((Path(run_dir) / METRICS_FILE).read_text())
    except (OSError, ValueError):
        return None


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
    return (f"{run_dir} is in use: process {holder.get('pid')} on {holder.get('host')} is training there. Wait for it "
            f"to finish or stop it (a stopped run can then be resumed); if no such process exists, delete "
            f"{run_dir / LOCK_FILE}.")


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


def find_runs(outputs_root: str | Path) -> list[Path]:
    """Run folders (those with a metrics.json) under `outputs_root`, oldest first."""
    files = [p for p in Path(outputs_root).glob(f"**/{METRICS_FILE}") if p.is_file()]
    return [p.parent for p in sorted(files, key=lambda p: p.stat().st_mtime)]


def find_training_runs(root: str | Path) -> list[Path]:
    """Folders of `train` runs under root (their Hydra job log is train.log), finished or not, sorted by path."""
    return sorted(p.parent for p in Path(root).glob("**/train.log") if (p.parent / ".hydra").is_dir())


def read_overrides(run_dir: str | Path) -> list[str]:
    """The command-line overrides the run was started with (Hydra's .hydra/overrides.yaml)."""
    try:
        import yaml

        return [str(o) for o in yaml.safe_load((Path(run_dir) / ".hydra" / "overrides.yaml").read_text()) or []]
    except (OSError, ValueError):
        return []


def is_sweep_job(run_dir: str | Path) -> bool:
    """Whether Hydra ran this folder as one job of a multirun (a grid sweep or a search trial)."""
    try:
        import yaml

        return yaml.safe_load((Path(run_dir) / ".hydra" / "hydra.yaml").read_text())["hydra"]["mode"] == "MULTIRUN"
    except (OSError, ValueError, KeyError, TypeError):
        return False


def newest_last_checkpoint(outputs_root: str | Path) -> Path:
    """The most recently written `last.ckpt` of a single run under `outputs_root` that no process trains in.

    Sweep jobs are left out: resume one by giving its checkpoint file.
    """
    found = [p for p in Path(outputs_root).glob(f"**/{CHECKPOINT_DIR}/{LAST_CHECKPOINT}") if p.is_file()]
    running = []
    for checkpoint in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True):
        run_dir = checkpoint.parent.parent
        if is_sweep_job(run_dir):
            continue
        if lock_holder(run_dir):
            running.append(str(run_dir))
            continue
        return checkpoint
    busy = f" ({len(running)} still training: {', '.join(running)})" if running else ""
    raise UserError(f"ckpt_path=last: no single run under {outputs_root} has a {CHECKPOINT_DIR}/{LAST_CHECKPOINT} to "
                    f"resume{busy}. Train first (make train), or give ckpt_path=PATH/TO/FILE.ckpt (a sweep job is "
                    f"resumed that way: ckpt_path=outputs/multirun/.../JOB/checkpoints/last.ckpt).")


def resume_checkpoint(ckpt_path: str | None, outputs_root: str | Path) -> Path | None:
    """Turn the `ckpt_path` setting (None, 'last' or a file) into the checkpoint file to resume from."""
    if ckpt_path in (None, ""):
        return None
    if ckpt_path == "last":
        return newest_last_checkpoint(outputs_root)
    path = Path(ckpt_path)
    if not path.is_file():
        raise UserError(f"ckpt_path={ckpt_path}: no such file. Give an existing .ckpt file or ckpt_path=last.")
    return path


def check_resumable(checkpoint: Path, net: dict) -> None:
    """Refuse, naming the setting, a resume whose checkpoint is not a training checkpoint of this network."""
    import torch

    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        saved = dict(state["hyper_parameters"]["net"])
        state["loops"], state["optimizer_states"]  # noqa: B018 - a training checkpoint has both
    except Exception as exc:
        reason = f"{exc.__class__.__name__}: {' '.join(str(exc).split())[:200]}"
        raise UserError(f"ckpt_path={checkpoint}: not a resumable mnist_lightning training checkpoint ({reason})") \
            from exc
    if saved != net:
        changed = sorted(k for k in set(saved) | set(net) if saved.get(k) != net.get(k))
        detail = ", ".join(f"{k}: {saved.get(k)!r} in the checkpoint, {net.get(k)!r} now" for k in changed)
        raise UserError(f"ckpt_path={checkpoint}: the checkpoint's network differs from model.net ({detail}). "
                        f"Resume with the run's own model settings, or start a new run without ckpt_path.")


def _usable(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0 and not path.name.startswith(".")


def validated_on_full_split(metrics: dict) -> bool:
    """A finished run whose validation covered the whole validation split: its val/acc_best compares with others."""
    samples, split = metrics.get("val_samples"), metrics.get("val_split_size")
    return metrics.get("state") == "finished" and bool(split) and samples == split


def resolve_model(ckpt_path: str | None, model_ref: str, outputs_root: str | Path) -> Path:
    """The checkpoint evaluate, predict and serve use: `ckpt_path` if given, else by `model_ref`.

    `best`: the highest val/acc_best among finished runs validated on the whole split (debug runs and runs
    with limited validation are not comparable); `latest`: the newest run with a usable checkpoint.
    """
    if ckpt_path:
        path = Path(ckpt_path)
        if not _usable(path):
            raise UserError(f"ckpt_path={ckpt_path}: no such checkpoint file")
        return path
    if model_ref not in ("best", "latest"):
        raise UserError(f"model_ref={model_ref}: use best, latest, or give ckpt_path=FILE")
    candidates = trained_runs(outputs_root)
    if not candidates:
        raise UserError(f"No trained model under {outputs_root}: run `make train` first (or give ckpt_path=FILE).")
    if model_ref == "latest":
        run_dir, metrics = candidates[-1]
    else:
        comparable = [c for c in candidates if validated_on_full_split(c[1])]
        if not comparable:
            raise UserError(f"model_ref=best: none of the {len(candidates)} runs under {outputs_root} finished with "
                            f"validation on the whole split (runs with trainer.limit_val_batches, debug presets, "
                            f"interrupted or pruned runs are not compared). Use model_ref=latest or ckpt_path=FILE.")
        run_dir, metrics = max(comparable, key=lambda c: c[1].get("val/acc_best") or 0.0)
    return run_dir / metrics["best_checkpoint"]


def trained_runs(outputs_root: str | Path) -> list[tuple[Path, dict]]:
    """(run folder, metrics) of the training runs whose best checkpoint is usable, oldest first."""
    found = []
    for run_dir in find_runs(outputs_root):
        metrics = read_metrics(run_dir) or {}
        best = metrics.get("best_checkpoint")
        if best and _usable(run_dir / best):
            found.append((run_dir, metrics))
    return found


def load_network(ckpt_path: str | Path, map_location: str = "cpu"):
    """The network stored in a training checkpoint, in eval mode, without Lightning and without unpickling code."""
    import torch

    from mnist_lightning.models import build_network

    path = Path(ckpt_path)
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
        net_spec = dict(checkpoint["hyper_parameters"]["net"])
        state = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
        network = build_network(**net_spec)
        network.load_state_dict(state)
    except Exception as exc:  # truncated, not a checkpoint, pickled code, another network's weights...
        reason = f"{exc.__class__.__name__}: {' '.join(str(exc).split())[:300]}"
        raise UserError(f"{path}: not a loadable mnist_lightning checkpoint ({reason})") from exc
    return network.to(map_location).eval()  # load_state_dict copies into the parameters' own device


def sha256sum(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def lineage() -> dict:
    """Where a result came from: code version, package versions, machine (no host name)."""
    repo = Path(__file__).resolve().parent.parent
    info = {"git_commit": None, "git_dirty": None}
    try:
        run = lambda *args: subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,  # noqa: E731
                                           timeout=10, check=True).stdout.strip()
        info["git_commit"] = run("rev-parse", "HEAD")
        info["git_dirty"] = bool(run("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        pass
    versions = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    info["versions"] = versions
    info["machine"] = machine_description()
    return info


def machine_description() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    accelerator = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"os": f"{platform.system()} {platform.release()}", "cpu": cpu, "cpu_count": os.cpu_count(),
            "accelerator": accelerator}
