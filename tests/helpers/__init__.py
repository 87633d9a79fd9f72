"""What several test modules share (fixtures stay in conftest.py): paths, running the commands, the service as
a subprocess, small files to feed them. Test modules import these from here, never from each other."""

from helpers.app import png_bytes, scribbles, tiny_run, write_reference
from helpers.cli import FAST, run_cli, run_dirs, run_without
from helpers.files import huge_png, write_idx
from helpers.paths import CONF_DIR, NO_DATA, ROOT, real_data_dir
from helpers.server import free_port, start_server, stop_server

__all__ = [
    "CONF_DIR",
    "FAST",
    "NO_DATA",
    "ROOT",
    "free_port",
    "huge_png",
    "png_bytes",
    "real_data_dir",
    "run_cli",
    "run_dirs",
    "run_without",
    "scribbles",
    "start_server",
    "stop_server",
    "tiny_run",
    "write_idx",
    "write_reference",
]
