"""What every verb does around its recipe: a user's mistake is one line on stderr and exit status 2."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import TypeVar

from mnist_lightning.errors import UserError

T = TypeVar("T")


def task(recipe: Callable[..., T]) -> Callable[..., T]:
    """Wrap a verb's `main(cfg)`: UserError (a bad setting, a missing file or extra) -> one logged line, exit 2.

    Anything else is a bug and keeps its traceback."""

    @functools.wraps(recipe)
    def wrapper(*args, **kwargs) -> T:
        try:
            return recipe(*args, **kwargs)
        except UserError as exc:
            logging.getLogger(recipe.__module__).error("%s", exc)
            sys.exit(2)

    return wrapper
