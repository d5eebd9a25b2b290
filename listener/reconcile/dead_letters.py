"""The dead-letter list: subscriptions whose step failed permanently or ran out of retries.

A dead-lettered subscription is not dispatched again until an operator retries it
(``blockhost dlq retry ID``). Dropping an entry (``dlq drop ID``) accepts the situation: the
subscription stays out of the worker pool until new chain facts arrive for it (a renewal or a
cancellation), because those may change what has to happen.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import asdict, dataclass

from provisioner.storage.sqlite_db import migrate, transaction

MIGRATIONS = (
    """
    CREATE TABLE dead_letters (
        id INTEGER PRIMARY KEY,
        subscription_id INTEGER NOT NULL,
        action TEXT NOT NULL,
        reason TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        facts_block INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('open', 'retried', 'dropped')),
        created_at INTEGER NOT NULL,
        resolved_at INTEGER
    );
    CREATE UNIQUE INDEX dead_letters_open ON dead_letters(subscription_id) WHERE state = 'open'
    """,
)


class DeadLetterError(Exception):
    """An operator asked for an entry that does not exist or is no longer open."""


@dataclass(frozen=True)
class DeadLetter:
    id: int
    subscription_id: int
    action: str
    reason: str
    attempts: int
    facts_block: int
    state: str
    created_at: int
    resolved_at: int | None

    def to_json(self) -> dict[str, object]:
        return asdict(self)


class DeadLetters:
    """Dead letters on the listener's SQLite connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        migrate(conn, "dead_letters", MIGRATIONS)

    def add(self, subscription_id: int, *, action: str, reason: str, attempts: int,
            facts_block: int) -> int:
        """Open an entry (or refresh the open one) for this subscription; returns its id."""
        with transaction(self._conn):
            row = self._conn.execute(
                "SELECT id FROM dead_letters WHERE subscription_id = ? AND state = 'open'",
                (subscription_id,)).fetchone()
            if row is not None:
                self._conn.execute(
                    "UPDATE dead_letters SET action = ?, reason = ?, attempts = ?, facts_block = ?"
                    " WHERE id = ?", (action, reason[:500], attempts, facts_block, row[0]))
                return int(row[0])
            cursor = self._conn.execute(
                "INSERT INTO dead_letters (subscription_id, action, reason, attempts, facts_block,"
                " state, created_at) VALUES (?, ?, ?, ?, ?, 'open', ?)",
                (subscription_id, action, reason[:500], attempts, facts_block, int(time.time())))
            return int(cursor.lastrowid or 0)

    def get(self, entry_id: int) -> DeadLetter | None:
        row = self._conn.execute("SELECT * FROM dead_letters WHERE id = ?", (entry_id,)).fetchone()
        return DeadLetter(**{k: row[k] for k in row.keys()}) if row else None

    def list(self, *, include_resolved: bool = False) -> list[DeadLetter]:
        query = "SELECT * FROM dead_letters"
        if not include_resolved:
            query += " WHERE state = 'open'"
        rows = self._conn.execute(query + " ORDER BY id")
        return [DeadLetter(**{k: r[k] for k in r.keys()}) for r in rows]

    def open_count(self) -> int:
        return int(self._conn.execute(
            "SELECT COUNT(*) FROM dead_letters WHERE state = 'open'").fetchone()[0])

    def blocked(self) -> dict[int, int | None]:
        """Subscriptions to keep out of the worker pool → the facts block a drop accepted
        (None for an open entry: blocked whatever happens on chain)."""
        blocked: dict[int, int | None] = {}
        rows = self._conn.execute(
            "SELECT subscription_id, state, MAX(facts_block) FROM dead_letters"
            " WHERE state IN ('open', 'dropped') GROUP BY subscription_id, state")
        for sub_id, state, facts_block in rows:
            if state == "open":
                blocked[int(sub_id)] = None
            elif blocked.get(int(sub_id), 0) is not None:
                blocked[int(sub_id)] = int(facts_block)
        return blocked

    def _resolve(self, entry_id: int, state: str) -> DeadLetter:
        with transaction(self._conn):
            entry = self.get(entry_id)
            if entry is None:
                raise DeadLetterError(f"no dead letter with id {entry_id}; see `blockhost dlq list`")
            if entry.state != "open":
                raise DeadLetterError(f"dead letter {entry_id} is already {entry.state}")
            self._conn.execute("UPDATE dead_letters SET state = ?, resolved_at = ? WHERE id = ?",
                               (state, int(time.time()), entry_id))
        resolved = self.get(entry_id)
        assert resolved is not None
        return resolved

    def retry(self, entry_id: int) -> DeadLetter:
        """Close the entry so the subscription is dispatched again (the caller resets its
        attempt counter)."""
        return self._resolve(entry_id, "retried")

    def drop(self, entry_id: int) -> DeadLetter:
        """Give up on the failure; new chain facts for the subscription bring it back."""
        return self._resolve(entry_id, "dropped")


def is_blocked(blocked: dict[int, int | None], subscription_id: int, updated_block: int) -> bool:
    """Pure: should dispatch skip this subscription?"""
    if subscription_id not in blocked:
        return False
    accepted = blocked[subscription_id]
    return accepted is None or updated_block <= accepted
