"""What every verb does around its recipe: Hydra's main on `conf/<verb>.yaml`, an override of a key no config has
refused with the nearest key, and a user's mistake as one line on stderr and exit status 2."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import TypeVar

from mnist_lightning.errors import UserError

T = TypeVar("T")
CONFIG_PATH = "pkg://mnist_lightning.conf"  # conf/ at the top of the checkout, installed as mnist_lightning.conf


def verb(config_name: str) -> Callable[[Callable[..., T]], Callable[[], T]]:
    """`@verb("evaluate")` on a verb's `main(cfg)`: the command-line entry point of that verb."""
    import hydra

    def decorate(recipe: Callable[..., T]) -> Callable[[], T]:
        hydra_main = hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=config_name)(task(recipe))

        @functools.wraps(recipe)
        def main() -> T:
            from mnist_lightning.cli import argv

            check_overrides(config_name, sys.argv[1:])
            argv.check_writable(sys.argv[1:])  # every verb writes its config and log under outputs/<verb>/
            return hydra_main()

        return main

    return decorate


def check_overrides(config_name: str, argv: list[str]) -> None:
    """An override of a key no config has: one line naming the nearest key, exit 2, before Hydra composes."""
    from mnist_lightning.cli.keys import check_known

    try:
        check_known(config_name, argv)
    except UserError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)


def unresolvable(exc: Exception) -> str | None:
    """One line for a setting whose value cannot be resolved when the recipe reads it (an interpolation such as
    `seed=${oc.env:NAME}` with NAME unset): the user's setting, not a bug. None for any other exception."""
    from omegaconf.errors import InterpolationResolutionError

    if not isinstance(exc, InterpolationResolutionError):
        return None
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"{exc.full_key}: {first}" if exc.full_key else first


def task(recipe: Callable[..., T]) -> Callable[..., T]:
    """Wrap a verb's `main(cfg)`: UserError (a bad setting, a missing file or extra) or a setting that cannot be
    resolved -> one logged line, exit 2.

    Anything else is a bug and keeps its traceback."""

    @functools.wraps(recipe)
    def wrapper(*args, **kwargs) -> T:
        try:
            return recipe(*args, **kwargs)
        except Exception as exc:
            message = str(exc) if isinstance(exc, UserError) else unresolvable(exc)
            if message is None:
                raise
            logging.getLogger(recipe.__module__).error("%s", message)
            sys.exit(2)

    return wrapper
