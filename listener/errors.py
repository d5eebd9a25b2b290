"""Exceptions shared by the listener; each carries one line a user can act on."""

from __future__ import annotations


class BlockhostError(Exception):
    """Base class for every error this package raises on purpose."""


class UserError(BlockhostError):
    """Something the operator or user can fix: bad config, missing file, bad flag.

    The message is a single line saying what went wrong, why, and what to do.
    The CLI prints it without a traceback and exits 1.
    """


class ConfigError(UserError):
    """The configuration is invalid; the message names the key path."""
