"""The listener's SQLite state: cursor, block-hash window, journaled events, chain facts, progress.

Invariant: events and the cursor that covers them are written in ONE transaction
(:meth:`Store.journal_batch`), so a crash either keeps both or neither. Every write keyed
by a chain identity is idempotent (``ON CONFLICT DO NOTHING``), so a replay changes nothing.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from listener.chain.events import ACTIONABLE, DecodedLog, args_from_json, args_json
from listener.chain.journal_schema import MIGRATIONS
from provisioner.storage.sqlite_db import connect, migrate, transaction

#: How many block hashes below the confirmed cursor stay in the window.
WINDOW_BELOW_CONFIRMED = 64



@dataclass(frozen=True)
class ChainState:
    chain_id: int | None
    cursor: int | None
    cursor_hash: str | None
    chain_time: int | None
    head: int | None
    confirmed_head: int | None
    halted_reason: str | None
    applied_block: int | None = None


@dataclass(frozen=True)
class Subscription:
    """The chain facts of one subscription (our progress on it is
    :class:`listener.reconcile.progress.Progress`, read from the same row)."""

    id: int
    plan_id: int
    subscriber: str
    expires_at: int
    cancelled: bool
    cancelled_at: int | None
    user_encrypted: bytes
    created_block: int
    updated_block: int

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Subscription:
        return cls(id=row["id"], plan_id=row["plan_id"], subscriber=row["subscriber"],
                   expires_at=row["expires_at"], cancelled=bool(row["cancelled"]),
                   cancelled_at=row["cancelled_at"],
                   user_encrypted=bytes(row["user_encrypted"] or b""),
                   created_block=row["created_block"], updated_block=row["updated_block"])


#: A purchase's facts (a replayed or re-journaled purchase overwrites with the same values).
_UPSERT_CREATED = (
    "INSERT INTO subscriptions (id, plan_id, subscriber, expires_at, user_encrypted,"
    " created_block, updated_block, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (id) DO UPDATE SET plan_id = excluded.plan_id,"
    " subscriber = excluded.subscriber, expires_at = excluded.expires_at,"
    " user_encrypted = excluded.user_encrypted, updated_block = excluded.updated_block")


def _event_from_row(row: sqlite3.Row, *, keep_rejection: bool = True) -> DecodedLog:
    """A journaled event back as the decoder produced it (its rejection cleared when a
    re-judgement is due)."""
    return DecodedLog(
        block_number=row["block_number"], block_hash=row["block_hash"], tx_hash=row["tx_hash"],
        log_index=row["log_index"], address=row["address"], name=row["name"],
        args=args_from_json(row["name"], json.loads(row["args"])),
        rejected=row["rejected"] if keep_rejection else None,
    )


class Store:
    """One connection per thread; create with :meth:`open`."""

    def __init__(self, conn: sqlite3.Connection, path: Path | str) -> None:
        self.conn = conn
        self.path = path
        migrate(conn, "listener", MIGRATIONS)

    @classmethod
    def open(cls, path: Path | str) -> Store:
        return cls(connect(path), path)

    def reopen(self) -> Store:
        """A new connection to the same database (for another thread)."""
        return Store.open(self.path)

    def close(self) -> None:
        self.conn.close()

    # -- chain cursor --------------------------------------------------------------------

    def chain_state(self) -> ChainState:
        row = self.conn.execute("SELECT * FROM chain_state WHERE id = 1").fetchone()
        return ChainState(**{k: row[k] for k in row.keys() if k not in {"id", "updated_at"}})

    def bind_chain(self, chain_id: int) -> None:
        """Remember the chain this database follows; refuse to mix chains."""
        state = self.chain_state()
        if state.chain_id is not None and state.chain_id != chain_id:
            from listener.errors import UserError

            raise UserError(
                f"database {self.path} follows chain {state.chain_id} but the RPC serves "
                f"{chain_id}; point db.path at a new file or fix chain.rpc_urls"
            )
        self.conn.execute("UPDATE chain_state SET chain_id = ? WHERE id = 1", (chain_id,))

    def record_heads(self, head: int, confirmed_head: int) -> None:
        self.conn.execute(
            "UPDATE chain_state SET head = ?, confirmed_head = ?, updated_at = ? WHERE id = 1",
            (head, confirmed_head, int(time.time())),
        )

    def halt(self, reason: str) -> None:
        self.conn.execute("UPDATE chain_state SET halted_reason = ? WHERE id = 1", (reason,))

    def journal_batch(
        self,
        logs: Iterable[DecodedLog],
        *,
        to_block: int,
        to_hash: str,
        to_timestamp: int,
        block_times: dict[int, int],
        move_cursor: bool = True,
        window: Iterable[tuple[int, str]] = (),
    ) -> int:
        """Journal logs of CONFIRMED blocks, apply their facts and move both cursors, atomically.

        Returns how many events were new. A log already journaled (same block hash and
        index) is skipped together with its facts, which makes replays no-ops.
        """
        with transaction(self.conn):
            fresh = self._insert_new_events(list(logs), block_times)
            self._apply_in_order(fresh, block_times)
            new = len(fresh)
            if move_cursor:
                self._remember_blocks([*window, (to_block, to_hash)], {to_block: to_timestamp})
                self.conn.execute(
                    "UPDATE chain_state SET cursor = ?, cursor_hash = ?, applied_block = ?,"
                    " chain_time = ?, updated_at = ? WHERE id = 1",
                    (to_block, to_hash, to_block, to_timestamp, int(time.time())),
                )
                self._prune_window(to_block)
        return new

    def journal_unconfirmed(
        self,
        logs: Iterable[DecodedLog],
        *,
        to_block: int,
        to_hash: str,
        block_times: dict[int, int],
        window: Iterable[tuple[int, str]] = (),
    ) -> int:
        """Journal logs of blocks above the confirmed head WITHOUT applying them; move the cursor.

        They become facts only through :meth:`promote` once their block is confirmed, and
        are dropped by :meth:`rewind` if a reorg orphans them first.
        """
        with transaction(self.conn):
            new = len(self._insert_new_events(list(logs), block_times, applied=False))
            self._remember_blocks([*window, (to_block, to_hash)], block_times)
            self.conn.execute(
                "UPDATE chain_state SET cursor = ?, cursor_hash = ?, updated_at = ? WHERE id = 1",
                (to_block, to_hash, int(time.time())),
            )
        return new

    def unapplied_blocks(self, up_to: int) -> dict[int, str]:
        """Block number → hash of journaled, not yet applied events at or below ``up_to``."""
        rows = self.conn.execute(
            "SELECT DISTINCT block_number, block_hash FROM events"
            " WHERE applied = 0 AND block_number <= ?", (up_to,))
        return {int(r[0]): str(r[1]) for r in rows}

    def promote(self, up_to: int, *, block_hash: str, timestamp: int) -> int:
        """Apply the facts of journaled events up to the newly confirmed block ``up_to``.

        Events are applied in chain order; the confirmed cursor and chain time (the confirmed
        block's timestamp) move in the same transaction. Returns how many were applied."""
        applied = 0
        with transaction(self.conn):
            rows = self.conn.execute(
                "SELECT * FROM events WHERE applied = 0 AND block_number <= ?"
                " ORDER BY block_number, log_index", (up_to,)).fetchall()
            for row in rows:
                self._apply_and_mark(_event_from_row(row), row["block_time"])
                applied += 1
            self.conn.execute(
                "UPDATE events SET applied = 1 WHERE applied = 0 AND block_number <= ?", (up_to,))
            self._remember_blocks([(up_to, block_hash)], {up_to: timestamp})
            self.conn.execute(
                "UPDATE chain_state SET applied_block = ?, chain_time = ?, updated_at = ?"
                " WHERE id = 1", (up_to, timestamp, int(time.time())))
            self._prune_window(up_to)
        return applied

    def window(self) -> list[tuple[int, str]]:
        """Remembered (block number, hash) pairs, newest first."""
        rows = self.conn.execute("SELECT number, hash FROM blocks ORDER BY number DESC")
        return [(int(r[0]), str(r[1])) for r in rows]

    def rewind(self, ancestor: int, ancestor_hash: str, *, old_cursor: int) -> int:
        """Forget everything above the common ancestor of a reorg; return dropped events.

        Only unconfirmed (never applied) events can be dropped here: a reorg below the
        confirmed cursor must go through :meth:`record_deep_reorg` instead."""
        state = self.chain_state()
        if state.applied_block is not None and ancestor < state.applied_block:
            raise ValueError("refusing to rewind below the confirmed cursor")
        with transaction(self.conn):
            dropped = self.conn.execute(
                "DELETE FROM events WHERE block_number > ? AND applied = 0", (ancestor,)).rowcount
            self.conn.execute("DELETE FROM blocks WHERE number > ?", (ancestor,))
            self._remember_blocks([(ancestor, ancestor_hash)], {})
            self.conn.execute(
                "UPDATE chain_state SET cursor = ?, cursor_hash = ?, updated_at = ? WHERE id = 1",
                (ancestor, ancestor_hash, int(time.time())))
            self.conn.execute(
                "INSERT INTO reorgs (detected_at, old_cursor, ancestor, dropped_events, deep)"
                " VALUES (?, ?, ?, ?, 0)", (int(time.time()), old_cursor, ancestor, dropped))
        return int(dropped)

    def record_deep_reorg(self, reason: str, *, old_cursor: int, ancestor: int | None) -> None:
        """Halt effects: a reorg reached blocks whose events were already acted upon."""
        with transaction(self.conn):
            self.conn.execute(
                "INSERT INTO reorgs (detected_at, old_cursor, ancestor, dropped_events, deep)"
                " VALUES (?, ?, ?, 0, 1)", (int(time.time()), old_cursor, ancestor))
            self.conn.execute("UPDATE chain_state SET halted_reason = ? WHERE id = 1", (reason,))

    def reorg_count(self) -> tuple[int, int]:
        """(shallow reorgs handled, deep reorgs that halted effects)."""
        row = self.conn.execute(
            "SELECT COALESCE(SUM(deep = 0), 0), COALESCE(SUM(deep = 1), 0) FROM reorgs").fetchone()
        return int(row[0]), int(row[1])

    def resume(self) -> None:
        """Operator action after a deep reorg was investigated: clear the halt."""
        self.conn.execute("UPDATE chain_state SET halted_reason = NULL WHERE id = 1")

    def journal_replayed(self, logs: Iterable[DecodedLog], *, block_times: dict[int, int]) -> int:
        """Insert confirmed events a replay found missing, then re-derive the facts of every
        subscription they touch from the whole journal in chain order (a late event must not
        overwrite a newer one). The cursors do not move. Returns how many were new."""
        touched: set[int] = set()
        with transaction(self.conn):
            fresh = self._insert_new_events(list(logs), block_times)
            for entry in fresh:
                if entry.name in {"PlanCreated", "PlanUpdated"}:
                    self._apply_and_mark(entry, None)
                elif entry.subscription_id is not None:
                    touched.add(entry.subscription_id)
            new = len(fresh)
            self._refold(touched)
        return new

    def event_hash_at(self, block_number: int, log_index: int) -> set[str]:
        """Hashes of journaled events at this position (more than one means a fork was seen)."""
        rows = self.conn.execute(
            "SELECT block_hash FROM events WHERE block_number = ? AND log_index = ?",
            (block_number, log_index))
        return {str(r[0]) for r in rows}

    def _refold(self, subscription_ids: Iterable[int]) -> None:
        """Recompute these subscriptions' chain facts from their applied events, in chain order.

        One pass over the journal for all of them: a scan per subscription made filling a
        large gap quadratic (4,000 missing purchases over a 20,000-event journal: 37 s)."""
        ids = sorted(set(subscription_ids))
        if not ids:
            return
        self.conn.executemany(
            "UPDATE subscriptions SET cancelled = 0, cancelled_at = NULL WHERE id = ?",
            [(i,) for i in ids])
        rows = self.conn.execute(
            "SELECT * FROM events WHERE applied = 1"
            " AND subscription_id IN (SELECT value FROM json_each(?))"
            " AND (rejected IS NULL OR rejected LIKE '%unknown subscription')"
            " ORDER BY subscription_id, block_number, log_index", (json.dumps(ids),)).fetchall()
        for row in rows:
            if row["name"] not in ACTIONABLE:
                continue
            self.conn.execute(
                "UPDATE events SET rejected = NULL"
                " WHERE block_number = ? AND log_index = ? AND block_hash = ?",
                (row["block_number"], row["log_index"], row["block_hash"]))
            self._apply_and_mark(_event_from_row(row, keep_rejection=False), row["block_time"])

    # -- internals of journaling ------------------------------------------------------------

    def _insert_new_events(self, logs: list[DecodedLog], block_times: dict[int, int], *,
                           applied: bool = True) -> list[DecodedLog]:
        """Insert the logs not yet journaled (one executemany); return those, in order.
        ``applied=False`` journals them without their facts (blocks not yet confirmed)."""
        if not logs:
            return []
        low = min(e.block_number for e in logs)
        high = max(e.block_number for e in logs)
        seen = {(str(r[0]), int(r[1])) for r in self.conn.execute(
            "SELECT block_hash, log_index FROM events WHERE block_number BETWEEN ? AND ?",
            (low, high))}
        fresh = []
        for entry in logs:
            identity = (entry.block_hash, entry.log_index)
            if identity not in seen:
                seen.add(identity)
                fresh.append(entry)
        self.conn.executemany(
            "INSERT INTO events (block_number, block_hash, tx_hash, log_index, address,"
            " name, subscription_id, plan_id, args, rejected, applied, block_time)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(e.block_number, e.block_hash, e.tx_hash, e.log_index, e.address, e.name,
              e.subscription_id, e.plan_id, e.args_text or args_json(e.args),
              e.rejected, int(applied), block_times.get(e.block_number)) for e in fresh],
        )
        return fresh

    def _apply_in_order(self, logs: list[DecodedLog], block_times: dict[int, int]) -> None:
        """Apply facts in chain order; runs of purchases go in one executemany."""
        created: list[tuple[Any, ...]] = []
        now = int(time.time())

        def flush() -> None:
            if created:
                self.conn.executemany(_UPSERT_CREATED, created)
                created.clear()

        for entry in logs:
            if entry.rejected is None and entry.name == "SubscriptionCreated":
                a = entry.args
                created.append((a["subscriptionId"], a["planId"], a["subscriber"],
                                a["expiresAt"], a["userEncrypted"], entry.block_number,
                                entry.block_number, now))
                continue
            flush()
            self._apply_and_mark(entry, block_times.get(entry.block_number))
        flush()

    def _apply_and_mark(self, entry: DecodedLog, block_time: int | None) -> None:
        if entry.rejected is None and entry.name in ACTIONABLE:
            problem = self._apply_fact(entry, block_time)
            if problem:
                self.conn.execute(
                    "UPDATE events SET rejected = ?"
                    " WHERE block_number = ? AND log_index = ? AND block_hash = ?",
                    (problem, entry.block_number, entry.log_index, entry.block_hash),
                )

    def _remember_blocks(self, pairs: Iterable[tuple[int, str]], times: dict[int, int]) -> None:
        self.conn.executemany(
            "INSERT INTO blocks (number, hash, timestamp) VALUES (?, ?, ?)"
            " ON CONFLICT (number) DO UPDATE SET hash = excluded.hash,"
            " timestamp = COALESCE(excluded.timestamp, blocks.timestamp)",
            [(number, block_hash.lower(), times.get(number)) for number, block_hash in pairs],
        )

    def _prune_window(self, confirmed: int) -> None:
        self.conn.execute("DELETE FROM blocks WHERE number < ?",
                          (confirmed - WINDOW_BELOW_CONFIRMED,))

    def _apply_fact(self, entry: DecodedLog, block_time: int | None) -> str | None:
        """Fold one event into the chain facts; return a rejection reason or None."""
        args = entry.args
        now = int(time.time())
        if entry.name == "SubscriptionCreated":
            self.conn.execute(
                _UPSERT_CREATED,
                (args["subscriptionId"], args["planId"], args["subscriber"], args["expiresAt"],
                 args["userEncrypted"], entry.block_number, entry.block_number, now),
            )
            return None
        if entry.name == "SubscriptionExtended":
            cursor = self.conn.execute(
                "UPDATE subscriptions SET expires_at = ?, updated_block = ?, updated_at = ?"
                " WHERE id = ?",
                (args["newExpiresAt"], entry.block_number, now, args["subscriptionId"]),
            )
            return None if cursor.rowcount else "extension of an unknown subscription"
        if entry.name == "SubscriptionCancelled":
            at = block_time if block_time is not None else now
            cursor = self.conn.execute(
                "UPDATE subscriptions SET cancelled = 1, cancelled_at = ?, expires_at = MIN(expires_at, ?),"
                " updated_block = ?, updated_at = ? WHERE id = ?",
                (at, at, entry.block_number, now, args["subscriptionId"]),
            )
            return None if cursor.rowcount else "cancellation of an unknown subscription"
        if entry.name in {"PlanCreated", "PlanUpdated"}:
            self.conn.execute(
                "INSERT INTO plans (id, name, price_cents, active, updated_block)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET name = excluded.name,"
                " price_cents = excluded.price_cents, active = excluded.active,"
                " updated_block = excluded.updated_block",
                (args["planId"], args["name"], args["pricePerDayUsdCents"],
                 int(args.get("active", True)), entry.block_number),
            )
            return None
        return None

    def event_count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def purchase_times(self) -> dict[int, int]:
        """Subscription id -> block time of its applied ``SubscriptionCreated``."""
        rows = self.conn.execute(
            "SELECT subscription_id, MIN(block_time) FROM events WHERE name = ?"
            " AND applied = 1 AND rejected IS NULL AND block_time IS NOT NULL"
            " GROUP BY subscription_id", ("SubscriptionCreated",))
        return {int(r[0]): int(r[1]) for r in rows if r[0] is not None}

    # -- subscriptions -------------------------------------------------------------------

    def subscriptions(self) -> list[Subscription]:
        rows = self.conn.execute("SELECT * FROM subscriptions ORDER BY id")
        return [Subscription.from_row(r) for r in rows]

    def subscription(self, subscription_id: int) -> Subscription | None:
        row = self.conn.execute("SELECT * FROM subscriptions WHERE id = ?",
                                (subscription_id,)).fetchone()
        return Subscription.from_row(row) if row else None
