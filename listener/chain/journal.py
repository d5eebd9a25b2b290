"""The listener's SQLite state: cursor, block-hash window, journaled events, chain facts, progress.

Invariant: events and the cursor that covers them are written in ONE transaction
(:meth:`Store.journal_batch`), so a crash either keeps both or neither. Every write keyed
by a chain identity is idempotent (``ON CONFLICT DO NOTHING``), so a replay changes nothing.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from pathlib import Path

from listener.chain.events import DecodedLog, args_json
from listener.chain.facts import apply_and_mark, apply_in_order, event_from_row, refold
from listener.chain.journal_schema import MIGRATIONS
from listener.chain.representable import column_int, contain
from listener.chain.retraction import ForkAccepted, Retraction
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

    def deployment_id(self) -> str | None:
        """The deployment id of the database header (None until the first bind writes it;
        see :mod:`listener.chain.deployment`)."""
        row = self.conn.execute("SELECT deployment_id FROM deployment WHERE id = 1").fetchone()
        return None if row is None else str(row[0])

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
            apply_in_order(self.conn, fresh, block_times)
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
                apply_and_mark(self.conn, event_from_row(row), row["block_time"])
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
            dropped = Retraction(self.conn).forget_above(ancestor, applied_too=False)
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

    def accept_fork(self, logs: Iterable[DecodedLog], *, ancestor: tuple[int, str, int],
                    to_block: int, to_hash: str, to_timestamp: int,
                    block_times: dict[int, int]) -> ForkAccepted:
        """Accept the canonical chain after a deep reorg (the operator's decision) and resume.

        In one transaction, so a crash leaves the halt in place: forget every journaled event
        above the common ``ancestor`` (number, hash, timestamp), applied or not; journal the
        canonical ``logs`` of the confirmed blocks ancestor+1..``to_block``; re-derive the facts
        of every subscription and plan either side touched (a purchase no longer on the chain
        ends at the ancestor's time, see :class:`Retraction`); move both cursors to
        ``to_block``; clear the halt."""
        number, block_hash, timestamp = ancestor
        with transaction(self.conn):
            retraction = Retraction(self.conn)
            dropped = retraction.forget_above(number, applied_too=True)
            retraction.touch(self._insert_new_events(list(logs), block_times))
            accepted = retraction.rederive(ancestor_time=timestamp, dropped=dropped)
            self._remember_blocks([(number, block_hash), (to_block, to_hash)],
                                  {number: timestamp, to_block: to_timestamp})
            self.conn.execute(
                "UPDATE chain_state SET cursor = ?, cursor_hash = ?, applied_block = ?,"
                " chain_time = ?, halted_reason = NULL, updated_at = ? WHERE id = 1",
                (to_block, to_hash, to_block, to_timestamp, int(time.time())))
            self.conn.execute(
                "UPDATE reorgs SET ancestor = ?, dropped_events = ?"
                " WHERE id = (SELECT MAX(id) FROM reorgs WHERE deep = 1)", (number, dropped))
            self._prune_window(to_block)
        return accepted

    def remembered_blocks(self) -> Generator[tuple[int, str], None, None]:
        """Every (block number, hash) the journal knows, newest first: the window and the
        blocks of journaled events (to find a deep reorg's common ancestor)."""
        rows = self.conn.execute(
            "SELECT number, hash FROM blocks UNION"
            " SELECT block_number, block_hash FROM events ORDER BY 1 DESC, 2")
        try:
            for number, block_hash in rows:
                yield int(number), str(block_hash)
        finally:
            rows.close()

    def events_above(self, block: int) -> tuple[int, list[int]]:
        """How many journaled events lie above ``block``, and the subscriptions they name."""
        count = self.conn.execute("SELECT COUNT(*) FROM events WHERE block_number > ?",
                                  (block,)).fetchone()[0]
        rows = self.conn.execute(
            "SELECT DISTINCT subscription_id FROM events WHERE block_number > ?"
            " AND subscription_id IS NOT NULL ORDER BY 1", (block,))
        return int(count), [int(r[0]) for r in rows]

    def journal_replayed(self, logs: Iterable[DecodedLog], *, block_times: dict[int, int]) -> int:
        """Insert confirmed events a replay found missing, then re-derive the facts of every
        subscription they touch from the whole journal in chain order (a late event must not
        overwrite a newer one). The cursors do not move. Returns how many were new."""
        touched: set[int] = set()
        with transaction(self.conn):
            fresh = self._insert_new_events(list(logs), block_times)
            for entry in fresh:
                if entry.name in {"PlanCreated", "PlanUpdated"}:
                    apply_and_mark(self.conn, entry, None)
                elif entry.subscription_id is not None and entry.rejected is None:
                    touched.add(entry.subscription_id)
            new = len(fresh)
            refold(self.conn, touched)
        return new

    def event_hash_at(self, block_number: int, log_index: int) -> set[str]:
        """Hashes of journaled events at this position (more than one means a fork was seen)."""
        rows = self.conn.execute(
            "SELECT block_hash FROM events WHERE block_number = ? AND log_index = ?",
            (block_number, log_index))
        return {str(r[0]) for r in rows}

    # -- internals of journaling ------------------------------------------------------------

    def _insert_new_events(self, logs: list[DecodedLog], block_times: dict[int, int], *,
                           applied: bool = True) -> list[DecodedLog]:
        """Insert the logs not yet journaled (one executemany); return those, in order, each
        :func:`~listener.chain.representable.contain`-ed (a value no column holds rejects its
        event). ``applied=False`` journals them without their facts (blocks not yet confirmed)."""
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
                fresh.append(contain(entry))
        self.conn.executemany(
            "INSERT INTO events (block_number, block_hash, tx_hash, log_index, address,"
            " name, subscription_id, plan_id, args, rejected, applied, block_time)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(e.block_number, e.block_hash, e.tx_hash, e.log_index, e.address, e.name,
              column_int(e.subscription_id), column_int(e.plan_id),
              e.args_text or args_json(e.args),
              e.rejected, int(applied), block_times.get(e.block_number)) for e in fresh],
        )
        return fresh

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
