"""What can go wrong with a chain write, by what the caller should do about it.

:class:`TxFailed` needs an operator (a revert); :class:`TxNodeError` is the node's trouble and
passes; :class:`TxPending` (and :class:`SignerUnhealthy`) mean "wait": the transaction is stored
and followed up on the next pass. The reconciler's failure policy reads their ``permanent`` flag.
"""

from __future__ import annotations

from listener.errors import BlockhostError


class TxFailed(BlockhostError):
    """The transaction reverted, or was refused for a reason a retry will not fix by itself."""

    permanent = True


class TxNodeError(BlockhostError):
    """The node failed or refused for a reason of its own (rate limit, internal error, a
    lagging backend): nothing is lost, the stored transaction is re-sent on a later pass."""

    permanent = False


#: What a node says when the call itself would fail (as opposed to the node failing).
WOULD_FAIL = ("revert", "out of gas", "invalid opcode", "invalid jump")


class TxPending(BlockhostError):
    """Not confirmed yet within the wait budget; a later pass continues (nothing is lost)."""


class SignerUnhealthy(TxPending):
    """The signer cannot get transactions mined right now (no funds, fees above the cap).

    An alert is recorded (health red); the stored transaction is re-sent on a later pass.
    """
