"""What several test modules share (fixtures stay in conftest.py): paths, running the commands, the service as
a subprocess, small files to feed them. Test modules import these from here, never from each other."""

from helpers.app import png_bytes, scribbles, serve_config, tiny_run, write_reference
from helpers.cli import FAST, run_cli, run_dirs, run_without
from helpers.files import encoded, hostile_images, huge_png, ico_wrapping, write_idx
from helpers.malformed import MALFORMED
from helpers.paths import CONF_DIR, NO_DATA, ROOT, real_data_dir
from helpers.postgres import postgres_server
from helpers.server import free_port, start_server, stop_server

__all__ = [
    "CONF_DIR",
    "MALFORMED",
    "FAST",
    "NO_DATA",
    "ROOT",
    "encoded",
    "free_port",
    "hostile_images",
    "huge_png",
    "ico_wrapping",
    "png_bytes",
    "postgres_server",
    "real_data_dir",
    "run_cli",
    "run_dirs",
    "run_without",
    "scribbles",
    "serve_config",
    "start_server",
    "stop_server",
    "tiny_run",
    "write_idx",
    "write_reference",
]
