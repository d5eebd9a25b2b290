"""What a node's refusal of ``eth_sendRawTransaction`` means, from its message text.

Nodes and providers word the same refusal differently; the transaction manager decides by the
class (resend, bump the fee, wait for funds), never by a message it matched itself.
"""

from __future__ import annotations

from enum import Enum


class SendOutcome(Enum):
    ACCEPTED = "accepted"
    KNOWN = "already known"
    NONCE_TOO_LOW = "nonce too low"
    UNDERPRICED = "underpriced"
    INSUFFICIENT_FUNDS = "insufficient funds"
    OTHER = "other"


_CLASSES: tuple[tuple[SendOutcome, tuple[str, ...]], ...] = (
    (SendOutcome.KNOWN, ("already known", "known transaction", "already imported",
                         "already in pool", "alreadyknown")),
    (SendOutcome.NONCE_TOO_LOW, ("nonce too low", "nonce is too low", "invalid nonce",
                                 "oldnonce", "nonce has already been used")),
    (SendOutcome.INSUFFICIENT_FUNDS, ("insufficient funds", "insufficient balance",
                                      "not enough funds", "lackoffund")),
    (SendOutcome.UNDERPRICED, ("underpriced", "fee too low", "max fee per gas less than",
                               "less than block base fee", "feecap", "fee cap")),
)


def classify_send_error(message: str) -> SendOutcome:
    """Map a node's refusal text (geth, anvil, erigon, nethermind, providers) to a class."""
    lowered = message.lower()
    for outcome, markers in _CLASSES:
        if any(marker in lowered for marker in markers):
            return outcome
    return SendOutcome.OTHER
