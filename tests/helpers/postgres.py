"""A real PostgreSQL server for the tests: `initdb` and `pg_ctl` in a temporary folder, on a free port of
127.0.0.1, as an unprivileged user when the tests run as root (PostgreSQL refuses to run as root), stopped at
the end. Debian's `postgresql` package provides the programs (.ci/run installs it when missing)."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from helpers.server import free_port

INSTALL = "install PostgreSQL's server: sudo apt-get install postgresql (Debian, Ubuntu); brew install postgresql"
UNPRIVILEGED = "nobody"


def postgres_bin() -> Path:
    """The folder holding initdb and pg_ctl: on PATH, or Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    assert candidates, f"the store's PostgreSQL tests need initdb and pg_ctl, and neither is installed: {INSTALL}"
    return Path(candidates[-1]).parent


@contextlib.contextmanager
def postgres_server(durable: bool = False):
    """Yields the SQLAlchemy URL of a fresh PostgreSQL server (database `postgres`, user `mnist`, no password);
    `durable`: commits wait for the disk (fsync on), as a production server's do, for benchmarks; tests skip it."""
    binaries = postgres_bin()
    folder = Path(tempfile.mkdtemp(prefix="mnist-postgres-"))
    as_user = {}
    if os.geteuid() == 0:
        user = pwd.getpwnam(UNPRIVILEGED)
        os.chown(folder, user.pw_uid, user.pw_gid)
        as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    data, port = folder / "data", free_port()

    def run(*command: str) -> None:
        result = subprocess.run(command, capture_output=True, text=True, cwd=folder, timeout=120, **as_user)
        assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"

    run(str(binaries / "initdb"), "-D", str(data), "-U", "mnist", "--auth=trust", "-E", "UTF8", "--no-sync")
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=200"
    options += "" if durable else " -c fsync=off"
    run(str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "server.log"), "-w", "start")
    try:
        yield f"postgresql+psycopg://mnist@127.0.0.1:{port}/postgres"
    finally:
        run(str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)
