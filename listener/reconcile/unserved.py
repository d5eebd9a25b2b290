"""Subscriptions that ended before they were ever served, and when they were bought.

The scanner reads block timestamps only where a decision needs them (cancellations), so a
catch-up stays cheap. A purchase's time matters for one thing: telling an operator what a
never-served subscriber paid for (a refund). The daemon dates just those purchases, a few per
loop, with :func:`undated_unserved_purchases` and :func:`date_purchases`.
"""

from __future__ import annotations

import sqlite3

#: Purchases of subscriptions that are over (expired or cancelled by ``chain_time``), never had
#: a VM built or an NFT minted, and whose block time is not known yet.
_UNDATED = """
    SELECT DISTINCT e.block_number FROM events e JOIN subscriptions s ON s.id = e.subscription_id
    WHERE e.name = 'SubscriptionCreated' AND e.applied = 1 AND e.rejected IS NULL
      AND e.block_time IS NULL AND s.token_id IS NULL
      AND (s.expires_at <= ? OR s.cancelled = 1)
      AND NOT EXISTS (SELECT 1 FROM steps t WHERE t.subscription_id = s.id
                      AND t.step = 'create_vm' AND t.phase = 'done')
    ORDER BY e.block_number LIMIT ?
"""


def undated_unserved_purchases(conn: sqlite3.Connection, chain_time: int,
                               limit: int = 20) -> list[int]:
    """Block numbers whose timestamp would date a never-served purchase."""
    return [int(row[0]) for row in conn.execute(_UNDATED, (chain_time, limit))]


def date_purchases(conn: sqlite3.Connection, times: dict[int, int]) -> None:
    """Record the block time of the purchases in these blocks."""
    conn.executemany(
        "UPDATE events SET block_time = ? WHERE block_number = ? AND block_time IS NULL"
        " AND name = 'SubscriptionCreated'", [(ts, number) for number, ts in times.items()])
