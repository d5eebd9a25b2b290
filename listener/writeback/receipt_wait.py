"""How often to look for a receipt while waiting for a transaction's block."""

from __future__ import annotations

from collections.abc import Iterator

#: The longest pause between two looks for a receipt (blocks come every few seconds).
MAX_RECEIPT_POLL = 2.0


def receipt_poll_delays(first: float) -> Iterator[float]:
    """Pauses between looks for a receipt: ``first``, then half as long again each time, up to
    :data:`MAX_RECEIPT_POLL` (a look costs several RPC calls; most receipts come early)."""
    delay = first
    while True:
        yield delay
        delay = min(max(first, MAX_RECEIPT_POLL), delay * 1.5)
