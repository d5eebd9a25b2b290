"""Checkpoint a SQLite WAL on a background thread, so a writer's commit never pays for it.

In WAL mode a commit appends pages to the ``-wal`` file; a *checkpoint* copies them back
into the database file and fsyncs it. SQLite's automatic checkpoint runs inside the COMMIT
that crosses the threshold, on the writer's thread: during a catch-up that was about half
of the time spent journaling (the fsync of tens of MB). Here a second connection runs
PASSIVE checkpoints, which never block readers or writers and never wait for a lock, every
``interval`` seconds. Durability does not change: a commit is in the WAL either way. The
writer's own automatic checkpoint stays on as a backstop if this thread falls behind.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from types import TracebackType

import structlog

from provisioner.storage.sqlite_db import connect

log = structlog.get_logger(__name__)


class WalCheckpointer:
    """A daemon thread that keeps one database's WAL short; use as a context manager."""

    def __init__(self, path: Path | str, *, interval: float = 0.25) -> None:
        if str(path) == ":memory:":
            raise ValueError("an in-memory database has no WAL to checkpoint")
        self.path = path
        self.interval = interval
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_error: str | None = None

    def start(self) -> WalCheckpointer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="wal-checkpoint",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the pass in progress (if any) and end the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> WalCheckpointer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            conn = connect(self.path)
        except sqlite3.Error as exc:
            self.errors += 1
            log.warning("db.checkpoint_failed", path=str(self.path),
                        error=f"{type(exc).__name__}: {exc}"[:200])
            return
        try:
            while not self._stop.wait(self.interval):
                self._pass(conn)
        finally:
            conn.close()

    def _pass(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            # e.g. disk full: the writer's automatic checkpoint still runs; say it once.
            self.errors += 1
            message = f"{type(exc).__name__}: {exc}"[:200]
            if message != self._last_error:
                log.warning("db.checkpoint_failed", path=str(self.path), error=message)
                self._last_error = message
            return
        self._last_error = None
