"""Temporary or permanent: how a failed step is handled, read from the error itself.

Each adapter classifies its errors once, on the class (``permanent``: see
:mod:`provisioner.errors` and :mod:`listener.errors`). The reconciler only asks this module, so
there is one policy and no list of exception types to keep in step with the adapters.
"""

from __future__ import annotations

import enum

from web3.exceptions import (
    BadResponseFormat,
    ProviderConnectionError,
    TimeExhausted,
    Web3RPCError,
)


class Failure(enum.Enum):
    """What a failed step means for its subscription."""

    #: Worth another pass (counted; dead-lettered only once the budget is spent).
    TEMPORARY = "temporary"
    #: Needs an operator: dead-lettered at once.
    PERMANENT = "permanent"


#: Errors of the libraries under our adapters that mean "the node or the network, not us":
#: a JSON-RPC error reply (rate limits -32005, "header not found", internal errors), a receipt
#: that did not come in time, a provider that could not connect.
_TEMPORARY_LIBRARY_ERRORS: tuple[type[BaseException], ...] = (
    Web3RPCError, TimeExhausted, ProviderConnectionError, BadResponseFormat, TimeoutError)


def classify(exc: BaseException) -> Failure:
    """The failure class of ``exc``. An error nobody classified is permanent: it goes to the
    dead-letter list with its reason instead of being retried blindly forever."""
    permanent = getattr(type(exc), "permanent", None)
    if isinstance(permanent, bool):
        return Failure.PERMANENT if permanent else Failure.TEMPORARY
    if isinstance(exc, _TEMPORARY_LIBRARY_ERRORS):
        return Failure.TEMPORARY
    if isinstance(exc, OSError):  # the network or the disk: try again later
        return Failure.TEMPORARY
    return Failure.PERMANENT


def is_classified(exc: BaseException) -> bool:
    """Did an adapter (or the table above) say what ``exc`` means? Unclassified errors are
    logged with their traceback: each one is a gap in an adapter to close."""
    return (isinstance(getattr(type(exc), "permanent", None), bool)
            or isinstance(exc, (*_TEMPORARY_LIBRARY_ERRORS, OSError)))
