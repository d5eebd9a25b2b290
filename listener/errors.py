"""Exceptions shared by the listener; each carries one line a user can act on."""

from __future__ import annotations

from typing import ClassVar


class BlockhostError(Exception):
    """Base class for every error this package raises on purpose."""

    #: True when no retry can fix it without an operator (the reconciler's failure policy).
    permanent: ClassVar[bool] = False


class UserError(BlockhostError):
    """Something the operator or user can fix: bad config, missing file, bad flag.

    The message is a single line saying what went wrong, why, and what to do.
    The CLI prints it without a traceback and exits 1.
    """

    permanent = True


class ConfigError(UserError):
    """The configuration is invalid; the message names the key path."""
