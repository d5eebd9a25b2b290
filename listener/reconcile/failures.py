"""Temporary or permanent: how a failed step is handled, read from the error itself.

Each adapter classifies its errors once, on the class (``permanent``: see
:mod:`provisioner.errors` and :mod:`listener.errors`). The reconciler only asks this module, so
there is one policy and no list of exception types to keep in step with the adapters.
"""

from __future__ import annotations

import enum


class Failure(enum.Enum):
    """What a failed step means for its subscription."""

    #: Worth another pass (counted; dead-lettered only once the budget is spent).
    TEMPORARY = "temporary"
    #: Needs an operator: dead-lettered at once.
    PERMANENT = "permanent"


def classify(exc: BaseException) -> Failure | None:
    """The failure class of ``exc``; None for an error nobody classified (a bug: the caller
    lets it propagate with its traceback)."""
    permanent = getattr(type(exc), "permanent", None)
    if isinstance(permanent, bool):
        return Failure.PERMANENT if permanent else Failure.TEMPORARY
    if isinstance(exc, OSError):  # the network or the disk: try again later
        return Failure.TEMPORARY
    return None
