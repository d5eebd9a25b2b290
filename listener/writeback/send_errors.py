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


def rpc_message(exc: Exception) -> str:
    """The node's own message from a web3 error, preferred to the exception's whole text."""
    response = getattr(exc, "rpc_response", None)
    if isinstance(response, dict) and isinstance(response.get("error"), dict):
        return str(response["error"].get("message", ""))
    message = getattr(exc, "message", None)
    if isinstance(message, str) and message:
        return message
    if exc.args and isinstance(exc.args[0], dict):
        return str(exc.args[0].get("message", exc.args[0]))
    return str(exc)


def short_message(message: str) -> str:
    """The first line, at most 200 characters: enough to act on, short enough to store."""
    return message.splitlines()[0][:200] if message else "no message"
