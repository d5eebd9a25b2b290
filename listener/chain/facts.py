"""Folding journaled events into the chain facts: the ``subscriptions`` and ``plans`` rows.

Called by :class:`listener.chain.journal.Store` inside its transactions. Facts are applied in
chain order; :func:`refold` recomputes a subscription's facts from its applied events when an
event arrives late (replay) or is retracted (an accepted deep reorg). The ``subscriptions`` row
also holds our progress on it, which nothing here touches.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from typing import Any

from listener.chain.events import ACTIONABLE, DecodedLog, args_from_json
from listener.chain.representable import stored_expiry

#: A purchase's facts (a replayed or re-journaled purchase overwrites with the same values).
_UPSERT_CREATED = (
    "INSERT INTO subscriptions (id, plan_id, subscriber, expires_at, user_encrypted,"
    " created_block, updated_block, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (id) DO UPDATE SET plan_id = excluded.plan_id,"
    " subscriber = excluded.subscriber, expires_at = excluded.expires_at,"
    " user_encrypted = excluded.user_encrypted, updated_block = excluded.updated_block")

_UPSERT_PLAN = (
    "INSERT INTO plans (id, name, price_cents, active, updated_block)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET name = excluded.name,"
    " price_cents = excluded.price_cents, active = excluded.active,"
    " updated_block = excluded.updated_block")


def event_from_row(row: sqlite3.Row, *, keep_rejection: bool = True) -> DecodedLog:
    """A journaled event back as the decoder produced it (its rejection cleared when a
    re-judgement is due)."""
    return DecodedLog(
        block_number=row["block_number"], block_hash=row["block_hash"], tx_hash=row["tx_hash"],
        log_index=row["log_index"], address=row["address"], name=row["name"],
        args=args_from_json(row["name"], json.loads(row["args"])),
        rejected=row["rejected"] if keep_rejection else None,
    )


def _created_row(entry: DecodedLog, now: int) -> tuple[Any, ...]:
    a = entry.args
    return (a["subscriptionId"], a["planId"], a["subscriber"],
            stored_expiry(a["expiresAt"], a["subscriptionId"]), a["userEncrypted"],
            entry.block_number, entry.block_number, now)


def apply_in_order(conn: sqlite3.Connection, logs: list[DecodedLog],
                   block_times: dict[int, int]) -> None:
    """Apply facts in chain order; runs of purchases go in one executemany."""
    created: list[tuple[Any, ...]] = []
    now = int(time.time())

    def flush() -> None:
        if created:
            conn.executemany(_UPSERT_CREATED, created)
            created.clear()

    for entry in logs:
        if entry.rejected is None and entry.name == "SubscriptionCreated":
            created.append(_created_row(entry, now))
            continue
        flush()
        apply_and_mark(conn, entry, block_times.get(entry.block_number))
    flush()


def apply_and_mark(conn: sqlite3.Connection, entry: DecodedLog, block_time: int | None) -> None:
    """Apply one event's fact; an event the facts refuse is marked rejected with the reason."""
    if entry.rejected is None and entry.name in ACTIONABLE:
        problem = _apply_fact(conn, entry, block_time)
        if problem:
            conn.execute(
                "UPDATE events SET rejected = ?"
                " WHERE block_number = ? AND log_index = ? AND block_hash = ?",
                (problem, entry.block_number, entry.log_index, entry.block_hash),
            )


def _apply_fact(conn: sqlite3.Connection, entry: DecodedLog,
                block_time: int | None) -> str | None:
    """Fold one event into the chain facts; return a rejection reason or None."""
    args = entry.args
    now = int(time.time())
    if entry.name == "SubscriptionCreated":
        conn.execute(_UPSERT_CREATED, _created_row(entry, now))
        return None
    if entry.name == "SubscriptionExtended":
        sub_id = args["subscriptionId"]
        cursor = conn.execute(
            "UPDATE subscriptions SET expires_at = ?, updated_block = ?, updated_at = ?"
            " WHERE id = ?",
            (stored_expiry(args["newExpiresAt"], sub_id), entry.block_number, now, sub_id),
        )
        return None if cursor.rowcount else "extension of an unknown subscription"
    if entry.name == "SubscriptionCancelled":
        at = block_time if block_time is not None else now
        cursor = conn.execute(
            "UPDATE subscriptions SET cancelled = 1, cancelled_at = ?,"
            " expires_at = MIN(expires_at, ?), updated_block = ?, updated_at = ? WHERE id = ?",
            (at, at, entry.block_number, now, args["subscriptionId"]),
        )
        return None if cursor.rowcount else "cancellation of an unknown subscription"
    if entry.name in {"PlanCreated", "PlanUpdated"}:
        conn.execute(_UPSERT_PLAN, (args["planId"], args["name"], args["pricePerDayUsdCents"],
                                    int(args.get("active", True)), entry.block_number))
    return None


def refold(conn: sqlite3.Connection, subscription_ids: Iterable[int]) -> None:
    """Recompute these subscriptions' chain facts from their applied events, in chain order.

    One pass over the journal for all of them: a scan per subscription made filling a
    large gap quadratic (4,000 missing purchases over a 20,000-event journal: 37 s)."""
    ids = sorted(set(subscription_ids))
    if not ids:
        return
    conn.executemany(
        "UPDATE subscriptions SET cancelled = 0, cancelled_at = NULL WHERE id = ?",
        [(i,) for i in ids])
    rows = conn.execute(
        "SELECT * FROM events WHERE applied = 1"
        " AND subscription_id IN (SELECT value FROM json_each(?))"
        " AND (rejected IS NULL OR rejected LIKE '%unknown subscription')"
        " ORDER BY subscription_id, block_number, log_index", (json.dumps(ids),)).fetchall()
    for row in rows:
        if row["name"] not in ACTIONABLE:
            continue
        conn.execute(
            "UPDATE events SET rejected = NULL"
            " WHERE block_number = ? AND log_index = ? AND block_hash = ?",
            (row["block_number"], row["log_index"], row["block_hash"]))
        apply_and_mark(conn, event_from_row(row, keep_rejection=False), row["block_time"])


def refold_plans(conn: sqlite3.Connection, plan_ids: Iterable[int]) -> None:
    """Recompute these plans from their applied plan events, in chain order (a plan none of
    them creates any more is forgotten)."""
    ids = json.dumps(sorted(set(plan_ids)))
    conn.execute("DELETE FROM plans WHERE id IN (SELECT value FROM json_each(?))", (ids,))
    rows = conn.execute(
        "SELECT * FROM events WHERE applied = 1 AND rejected IS NULL"
        " AND name IN ('PlanCreated', 'PlanUpdated')"
        " AND plan_id IN (SELECT value FROM json_each(?))"
        " ORDER BY block_number, log_index", (ids,)).fetchall()
    for row in rows:
        apply_and_mark(conn, event_from_row(row), row["block_time"])
