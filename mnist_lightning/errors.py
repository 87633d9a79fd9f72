"""Errors caused by the user's input: the CLIs print them as one line, without a traceback."""


class UserError(Exception):
    """A mistake the user can fix (a bad override, a missing file); the message says how."""


class DataError(UserError):
    """The MNIST files are missing, truncated, corrupted or cannot be downloaded."""
