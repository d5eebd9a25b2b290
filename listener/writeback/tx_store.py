"""Persistence of the transaction manager: requests, signed attempts, signer alerts.

A *request* is one effect we want on chain, named by an idempotency key
(``mint:sub:7``); it owns a nonce. An *attempt* is one signed transaction for that
request (the first, then fee-bumped replacements with the same nonce). Every attempt's raw
bytes are committed here BEFORE they are broadcast, so after a crash the very same bytes
can be re-sent. Nothing secret is stored: raw transactions and calldata are public once
broadcast, and the calldata only ever carries ciphertext.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from listener.redact import redact
from provisioner.storage.sqlite_db import connect, migrate, transaction

MIGRATIONS = (
    """
    CREATE TABLE tx_requests (
        id INTEGER PRIMARY KEY,
        idempotency_key TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        subscription_id INTEGER,
        sender TEXT NOT NULL,
        to_address TEXT NOT NULL,
        data BLOB NOT NULL,
        value TEXT NOT NULL,
        gas INTEGER NOT NULL,
        nonce INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'mined', 'confirmed', 'reverted')),
        tx_hash TEXT,
        block_number INTEGER,
        block_hash TEXT,
        created_block INTEGER NOT NULL,
        result TEXT,
        error TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX tx_requests_nonce ON tx_requests(sender, nonce);
    CREATE INDEX tx_requests_subscription ON tx_requests(subscription_id);
    CREATE TABLE tx_attempts (
        id INTEGER PRIMARY KEY,
        request_id INTEGER NOT NULL REFERENCES tx_requests(id),
        nonce INTEGER NOT NULL,
        tx_hash TEXT NOT NULL UNIQUE,
        raw_tx BLOB NOT NULL,
        max_fee TEXT NOT NULL,
        priority_fee TEXT NOT NULL,
        signed_block INTEGER NOT NULL,
        broadcast_at INTEGER,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX tx_attempts_request ON tx_attempts(request_id);
    CREATE TABLE tx_alerts (
        sender TEXT NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL,
        since INTEGER NOT NULL,
        PRIMARY KEY (sender, kind)
    );
    CREATE TABLE tx_counters (
        name TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    )
    """,
)

OPEN_STATES = ("pending", "mined")


@dataclass(frozen=True)
class TxRequest:
    id: int
    idempotency_key: str
    kind: str
    subscription_id: int | None
    sender: str
    to_address: str
    data: bytes
    value: int
    gas: int
    nonce: int
    state: str
    tx_hash: str | None
    block_number: int | None
    block_hash: str | None
    created_block: int
    result: dict[str, Any] | None
    error: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> TxRequest:
        data = {k: row[k] for k in row.keys() if k not in {"created_at", "updated_at"}}
        data["data"] = bytes(data["data"])
        data["value"] = int(data["value"])
        data["result"] = json.loads(data["result"]) if data["result"] else None
        return cls(**data)

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES


@dataclass(frozen=True)
class TxAttempt:
    id: int
    request_id: int
    nonce: int
    tx_hash: str
    raw_tx: bytes
    max_fee: int
    priority_fee: int
    signed_block: int
    broadcast_at: int | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> TxAttempt:
        data = {k: row[k] for k in row.keys() if k != "created_at"}
        data["raw_tx"] = bytes(data["raw_tx"])
        data["max_fee"] = int(data["max_fee"])
        data["priority_fee"] = int(data["priority_fee"])
        return cls(**data)


@dataclass(frozen=True)
class SignedAttempt:
    """What a signing callback hands back: the bytes to store and their identity."""

    raw_tx: bytes
    tx_hash: str
    max_fee: int
    priority_fee: int


@dataclass(frozen=True)
class Alert:
    sender: str
    kind: str
    message: str
    since: int


class TxStore:
    """Transaction tables on the shared SQLite file; one instance per connection/thread."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        migrate(conn, "txmanager", MIGRATIONS)

    @classmethod
    def open(cls, path: Path | str) -> TxStore:
        return cls(connect(path))

    # -- requests ------------------------------------------------------------------------

    def get(self, key: str) -> TxRequest | None:
        row = self.conn.execute("SELECT * FROM tx_requests WHERE idempotency_key = ?",
                                (key,)).fetchone()
        return TxRequest.from_row(row) if row else None

    def by_id(self, request_id: int) -> TxRequest:
        row = self.conn.execute("SELECT * FROM tx_requests WHERE id = ?",
                                (request_id,)).fetchone()
        return TxRequest.from_row(row)

    def _next_nonce(self, sender: str, chain_nonce: int) -> int:
        row = self.conn.execute("SELECT MAX(nonce) FROM tx_requests WHERE sender = ?",
                                (sender,)).fetchone()
        stored = -1 if row[0] is None else int(row[0])
        return max(chain_nonce, stored + 1)

    def create(self, *, key: str, kind: str, subscription_id: int | None, sender: str,
               to_address: str, data: bytes, value: int, gas: int, created_block: int,
               chain_nonce: int, sign: Callable[[int], SignedAttempt],
               exact_nonce: int | None = None) -> tuple[TxRequest, bool]:
        """Allocate a nonce, sign and commit request + first attempt atomically.

        ``BEGIN IMMEDIATE`` serializes this against other processes on the same file (a
        manual ``blockhost mint`` next to the daemon), so two signers never share a nonce.
        Returns (request, created); an existing request for ``key`` is returned untouched.
        ``exact_nonce`` (gap filling only) takes that nonce instead of the next free one.
        """
        with transaction(self.conn):
            existing = self.get(key)
            if existing is not None:
                return existing, False
            nonce = (exact_nonce if exact_nonce is not None
                     else self._next_nonce(sender, chain_nonce))
            signed = sign(nonce)
            now = int(time.time())
            cursor = self.conn.execute(
                "INSERT INTO tx_requests (idempotency_key, kind, subscription_id, sender,"
                " to_address, data, value, gas, nonce, state, created_block, created_at,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?)",
                (key, kind, subscription_id, sender, to_address, data, str(value), gas, nonce,
                 created_block, now, now),
            )
            self._insert_attempt(int(cursor.lastrowid or 0), nonce, signed, created_block)
        request = self.get(key)
        assert request is not None
        return request, True

    def renonce(self, request_id: int, *, sender: str, chain_nonce: int, head: int,
                sign: Callable[[int], SignedAttempt]) -> TxRequest:
        """Move a request whose nonce was used by someone else to a fresh nonce.

        Only called once the chain has shown that the request's effect is NOT there.
        """
        with transaction(self.conn):
            nonce = self._next_nonce(sender, chain_nonce)
            signed = sign(nonce)
            self.conn.execute(
                "UPDATE tx_requests SET nonce = ?, state = 'pending', tx_hash = NULL,"
                " block_number = NULL, block_hash = NULL, updated_at = ? WHERE id = ?",
                (nonce, int(time.time()), request_id))
            self._insert_attempt(request_id, nonce, signed, head)
        return self.by_id(request_id)

    def add_attempt(self, request_id: int, nonce: int, signed: SignedAttempt,
                    head: int) -> TxAttempt:
        with transaction(self.conn):
            attempt_id = self._insert_attempt(request_id, nonce, signed, head)
        row = self.conn.execute("SELECT * FROM tx_attempts WHERE id = ?", (attempt_id,)).fetchone()
        return TxAttempt.from_row(row)

    def _insert_attempt(self, request_id: int, nonce: int, signed: SignedAttempt,
                        head: int) -> int:
        cursor = self.conn.execute(
            "INSERT INTO tx_attempts (request_id, nonce, tx_hash, raw_tx, max_fee, priority_fee,"
            " signed_block, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (request_id, nonce, signed.tx_hash, signed.raw_tx, str(signed.max_fee),
             str(signed.priority_fee), head, int(time.time())),
        )
        return int(cursor.lastrowid or 0)

    def attempts(self, request_id: int, *, nonce: int | None = None) -> list[TxAttempt]:
        """Attempts oldest first (optionally only those for ``nonce``)."""
        if nonce is None:
            rows = self.conn.execute(
                "SELECT * FROM tx_attempts WHERE request_id = ? ORDER BY id", (request_id,))
        else:
            rows = self.conn.execute(
                "SELECT * FROM tx_attempts WHERE request_id = ? AND nonce = ? ORDER BY id",
                (request_id, nonce))
        return [TxAttempt.from_row(r) for r in rows]

    def mark_broadcast(self, attempt_id: int) -> None:
        self.conn.execute(
            "UPDATE tx_attempts SET broadcast_at = COALESCE(broadcast_at, ?) WHERE id = ?",
            (int(time.time()), attempt_id))

    def set_state(self, request_id: int, state: str, *, tx_hash: str | None = None,
                  block_number: int | None = None, block_hash: str | None = None,
                  result: dict[str, Any] | None = None, error: str | None = None) -> None:
        self.conn.execute(
            "UPDATE tx_requests SET state = ?, tx_hash = ?, block_number = ?, block_hash = ?,"
            " result = COALESCE(?, result), error = ?, updated_at = ? WHERE id = ?",
            (state, tx_hash, block_number, block_hash,
             json.dumps(result, sort_keys=True) if result is not None else None,
             redact(error) if error is not None else None,
             int(time.time()), request_id))

    def open_requests(self, sender: str) -> list[TxRequest]:
        rows = self.conn.execute(
            "SELECT * FROM tx_requests WHERE sender = ? AND state IN ('pending', 'mined')"
            " ORDER BY nonce", (sender,))
        return [TxRequest.from_row(r) for r in rows]

    def requests(self, *, subscription_id: int | None = None) -> list[TxRequest]:
        if subscription_id is None:
            rows = self.conn.execute("SELECT * FROM tx_requests ORDER BY id")
        else:
            rows = self.conn.execute("SELECT * FROM tx_requests WHERE subscription_id = ?"
                                     " ORDER BY id", (subscription_id,))
        return [TxRequest.from_row(r) for r in rows]

    def stored_nonces(self, sender: str) -> set[int]:
        rows = self.conn.execute("SELECT nonce FROM tx_requests WHERE sender = ?", (sender,))
        return {int(r[0]) for r in rows}

    def results_of_kind(self, kind: str) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT result FROM tx_requests WHERE kind = ? AND result IS NOT NULL", (kind,))
        return [json.loads(r[0]) for r in rows]

    def pending_count(self) -> int:
        row = self.conn.execute(
            "SELECT COUNT(*) FROM tx_requests WHERE state IN ('pending', 'mined')").fetchone()
        return int(row[0])

    def forget_failed(self, key: str) -> bool:
        """Let a reverted request be tried again: its key is renamed, its nonce stays used."""
        request = self.get(key)
        if request is None or request.state != "reverted":
            return False
        self.conn.execute(
            "UPDATE tx_requests SET idempotency_key = ?, updated_at = ? WHERE id = ?",
            (f"{key}#reverted-{request.id}", int(time.time()), request.id))
        return True

    # -- alerts and counters -------------------------------------------------------------

    def set_alert(self, sender: str, kind: str, message: str) -> None:
        self.conn.execute(
            "INSERT INTO tx_alerts (sender, kind, message, since) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (sender, kind) DO UPDATE SET message = excluded.message",
            (sender, kind, redact(message)[:300], int(time.time())))

    def clear_alert(self, sender: str, kind: str) -> None:
        self.conn.execute("DELETE FROM tx_alerts WHERE sender = ? AND kind = ?", (sender, kind))

    def alerts(self) -> list[Alert]:
        rows = self.conn.execute(
            "SELECT sender, kind, message, since FROM tx_alerts ORDER BY since")
        return [Alert(*tuple(r)) for r in rows]

    def incr(self, name: str, by: int = 1) -> None:
        self.conn.execute(
            "INSERT INTO tx_counters (name, value) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value", (name, by))

    def counters(self) -> dict[str, int]:
        return {r[0]: int(r[1]) for r in self.conn.execute("SELECT name, value FROM tx_counters")}
