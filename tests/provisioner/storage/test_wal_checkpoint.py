"""WalCheckpointer: WAL frames reach the database file without the writer checkpointing."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from provisioner.storage.sqlite_db import connect, transaction
from provisioner.storage.wal_checkpoint import WalCheckpointer

ROW = "x" * 1000


def _writer(path: Path):
    conn = connect(path)
    conn.execute("PRAGMA wal_autocheckpoint = 0")  # only the checkpointer may move frames
    conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    return conn


def _write(conn, rows: int) -> None:
    with transaction(conn):
        conn.executemany("INSERT INTO t (v) VALUES (?)", [(ROW,)] * rows)


def _wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_committed_pages_reach_the_database_file(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    conn = _writer(path)
    _write(conn, 2000)  # ~2 MB, all of it in the WAL
    time.sleep(0.3)
    assert path.stat().st_size < 100_000  # nobody checkpointed: the rows are only in the WAL
    with WalCheckpointer(path, interval=0.02) as checkpointer:
        assert _wait_for(lambda: path.stat().st_size > 2_000_000)
    assert checkpointer.errors == 0
    fresh = connect(path)
    assert fresh.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 2000


def test_the_writer_keeps_committing_while_checkpoints_run(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    conn = _writer(path)
    failures: list[BaseException] = []

    def reader() -> None:
        other = connect(path)
        try:
            for _ in range(200):
                other.execute("SELECT COUNT(*) FROM t").fetchone()
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    with WalCheckpointer(path, interval=0.001) as checkpointer:
        thread = threading.Thread(target=reader)
        thread.start()
        for _ in range(100):
            _write(conn, 50)
        thread.join()
    assert failures == [] and checkpointer.errors == 0
    assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 5000
    # everything committed has been (or can be) moved: the WAL is not left behind
    busy, frames, moved = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert busy == 0 and frames == moved


def test_stop_ends_the_thread_and_is_idempotent(tmp_path: Path) -> None:
    checkpointer = WalCheckpointer(tmp_path / "db.sqlite3", interval=0.01).start()
    time.sleep(0.05)
    checkpointer.stop()
    checkpointer.stop()
    assert not any(t.name == "wal-checkpoint" and t.is_alive() for t in threading.enumerate())


def test_a_database_it_cannot_open_is_counted_not_raised(tmp_path: Path) -> None:
    not_a_file = tmp_path / "dir.sqlite3"
    not_a_file.mkdir()
    checkpointer = WalCheckpointer(not_a_file, interval=0.01).start()
    assert _wait_for(lambda: checkpointer.errors == 1)
    checkpointer.stop()


def test_memory_databases_are_refused() -> None:
    with pytest.raises(ValueError, match="in-memory"):
        WalCheckpointer(":memory:")
