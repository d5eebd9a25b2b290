"""The simulator's failure channels, shared by every part of it.

PVE reports a problem either at once (an HTTP error) or later, as the exit status of a UPID
task; a third kind exists only for fault injection (the answer is never sent).
"""

from __future__ import annotations


class SimError(Exception):
    """An API error: HTTP status, message (goes into the reason phrase), optional errors."""

    def __init__(self, status: int, message: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors


class TaskError(Exception):
    """An error raised inside a task worker: becomes the task's exitstatus."""


class DropConnection(Exception):
    """Close the connection without sending a response (fault injection)."""
