"""Forgetting a stretch of the journal and re-deriving the facts it touched.

A shallow reorg only drops events that never became facts (:meth:`Store.rewind`). Accepting a
deep reorg (:meth:`Store.accept_fork`) also drops applied ones, so the subscriptions and plans
they named are recomputed from what the journal keeps plus the canonical events journaled in
their place.

A subscription whose purchase is no longer journaled was not paid on the canonical chain. Its
row (which also holds our progress: VM, NFT) stays, so nothing is orphaned, but its paid time
ends at the fork: ``expires_at`` becomes at most the common ancestor's timestamp. A VM built
for it then stops and is destroyed after the grace period, through the usual decisions and
ownership checks, as at any expiry. Should the same purchase be mined again later, its
``SubscriptionCreated`` rewrites ``expires_at`` and the subscription is served again.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from listener.chain.events import DecodedLog
from listener.chain.facts import refold, refold_plans

_PLAN_EVENTS = ("PlanCreated", "PlanUpdated")


@dataclass(frozen=True)
class ForkAccepted:
    """What accepting the canonical chain changed."""

    #: journaled events above the common ancestor, forgotten (facts and all)
    retracted_events: int
    #: canonical events journaled in their place
    journaled_events: int
    #: subscriptions whose facts were re-derived
    rederived: list[int] = field(default_factory=list)
    #: of those, the ones whose purchase is not on the canonical chain: paid time ends at the fork
    unpurchased: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return asdict(self)


class Retraction:
    """The subscriptions and plans a forgotten stretch of the journal named, re-derived at the
    end; runs inside the caller's transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.subscriptions: set[int] = set()
        self.plans: set[int] = set()
        self.journaled = 0

    def forget_above(self, block: int, *, applied_too: bool) -> int:
        """Delete the journaled events and remembered hashes above ``block``; return how many
        events went. Without ``applied_too`` only unapplied events go (a shallow reorg)."""
        if applied_too:
            rows = self.conn.execute(
                "SELECT name, subscription_id, plan_id FROM events WHERE block_number > ?"
                " AND rejected IS NULL", (block,))
            for name, subscription_id, plan_id in rows:
                self._note(name, subscription_id, plan_id)
            dropped = self.conn.execute("DELETE FROM events WHERE block_number > ?", (block,))
        else:
            dropped = self.conn.execute(
                "DELETE FROM events WHERE block_number > ? AND applied = 0", (block,))
        self.conn.execute("DELETE FROM blocks WHERE number > ?", (block,))
        return int(dropped.rowcount)

    def touch(self, entries: Iterable[DecodedLog]) -> None:
        """Newly journaled (applied) events whose facts must be derived too."""
        for entry in entries:
            self.journaled += 1
            if entry.rejected is None:
                self._note(entry.name, entry.subscription_id, entry.plan_id)

    def rederive(self, *, ancestor_time: int, dropped: int) -> ForkAccepted:
        """Recompute every touched subscription and plan (a purchase's block too); end the
        unpurchased ones at ``ancestor_time``."""
        refold(self.conn, self.subscriptions)
        refold_plans(self.conn, self.plans)
        unpurchased = self._settle_purchases(ancestor_time)
        return ForkAccepted(dropped, self.journaled, sorted(self.subscriptions), unpurchased)

    def _note(self, name: str, subscription_id: int | None, plan_id: int | None) -> None:
        if name in _PLAN_EVENTS and plan_id is not None:
            self.plans.add(plan_id)
        elif subscription_id is not None:
            self.subscriptions.add(subscription_id)

    def _settle_purchases(self, at: int) -> list[int]:
        """Date each touched subscription from its journaled purchase; end the ones without
        one at ``at``; return those."""
        ids = json.dumps(sorted(self.subscriptions))
        bought = dict(self.conn.execute(
            "SELECT subscription_id, MIN(block_number) FROM events"
            " WHERE name = 'SubscriptionCreated' AND applied = 1 AND rejected IS NULL"
            " AND subscription_id IN (SELECT value FROM json_each(?)) GROUP BY subscription_id",
            (ids,)).fetchall())
        self.conn.executemany("UPDATE subscriptions SET created_block = ? WHERE id = ?",
                              [(block, i) for i, block in bought.items()])
        rows = self.conn.execute(
            "SELECT id FROM subscriptions WHERE id IN (SELECT value FROM json_each(?))", (ids,))
        ended = [int(r[0]) for r in rows if r[0] not in bought]
        self.conn.executemany(
            "UPDATE subscriptions SET expires_at = MIN(expires_at, ?), updated_at = ?"
            " WHERE id = ?", [(at, int(time.time()), i) for i in ended])
        return ended
