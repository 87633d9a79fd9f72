"""Errors caused by the user's input: the CLIs print them as one line, without a traceback."""

from __future__ import annotations

import importlib


class UserError(Exception):
    """A mistake the user can fix (a bad override, a missing file); the message says how."""


class DataError(UserError):
    """The MNIST files are missing, truncated, corrupted or cannot be downloaded."""


def require_extra(extra: str, *modules: str, needed_for: str) -> None:
    """Import `modules`; when any is missing, one UserError naming them and the extra that installs them."""
    missing = []
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise UserError(
            f"{needed_for} needs the {extra} extra ({', '.join(missing)} missing): "
            f"pip install 'mnist-lightning[{extra}]' (in a checkout: pip install -e '.[{extra}]')"
        )
