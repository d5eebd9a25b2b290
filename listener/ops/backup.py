"""``blockhost backup``: a consistent copy of the live database through SQLite's backup API.

The copy is taken in one step, i.e. inside one read transaction: in WAL mode that never blocks
the running daemon's writers and sees one committed state. It is written to a 0600 temporary
file beside the target, verified (``PRAGMA integrity_check`` and our schema), then linked into
place, so a half-written or unverified copy never carries the backup's name.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from listener.chain.journal_schema import MIGRATIONS
from listener.errors import UserError

#: What the timer's ``--dir`` writes and ``--keep`` prunes (a UTC time, so names sort by age).
BACKUP_NAME = re.compile(r"^blockhost-\d{8}T\d{6}Z\.db$")
#: Tables whose row counts the report shows (those present in the copy).
COUNTED = ("events", "subscriptions", "vms", "tx_requests", "dead_letters")
BUSY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class BackupReport:
    """What a verified backup holds."""

    path: Path
    size: int
    schema_version: int
    chain_id: int | None
    cursor: int | None
    counts: dict[str, int]
    pruned: list[Path] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"path": str(self.path), "size": self.size, "schema_version": self.schema_version,
                "chain_id": self.chain_id, "cursor": self.cursor, "counts": self.counts,
                "pruned": [str(path) for path in self.pruned]}


def take_backup(db_path: Path, out: Path, *, force: bool = False) -> BackupReport:
    """Copy ``db_path`` to ``out`` (refused if ``out`` exists, unless ``force``) and verify it."""
    _check_target(out, force=force)
    fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial")
    os.close(fd)  # mkstemp made it 0600 and empty: SQLite writes into that file
    partial = Path(name)
    try:
        with _sqlite_errors(f"cannot back up {db_path}"):
            _copy(db_path, partial)
        report = verify_backup(partial, name=f"the copy of {db_path}")
        _place(partial, out, force=force)
    finally:
        partial.unlink(missing_ok=True)
    return replace(report, path=out)


def backup_into(db_path: Path, directory: Path, *, keep: int, now: datetime) -> BackupReport:
    """A dated backup in ``directory`` (made 0700 if missing), then only the newest ``keep``
    dated backups are kept; older ones are removed only after the new one is verified."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    report = take_backup(db_path, directory / f"blockhost-{now:%Y%m%dT%H%M%SZ}.db")
    return replace(report, pruned=prune(directory, keep))


def prune(directory: Path, keep: int) -> list[Path]:
    """Remove all but the newest ``keep`` dated backups; return what was removed."""
    dated = sorted(path for path in directory.iterdir() if BACKUP_NAME.match(path.name))
    old = dated[:-keep] if keep > 0 else dated
    for path in old:
        path.unlink()
    return old


def verify_backup(path: Path, *, name: str | None = None) -> BackupReport:
    """Open the copy read only: it must pass ``integrity_check`` and hold our schema
    (``name`` says what the copy is in errors, e.g. while it still has a temporary name)."""
    name = name or f"backup {path}"
    with _sqlite_errors(f"{name} does not verify"):
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            _check_integrity(conn, name)
            version = _schema_version(conn, name)
            chain_id, cursor = conn.execute(
                "SELECT chain_id, cursor FROM chain_state WHERE id = 1").fetchone()
            counts = _counts(conn)
        finally:
            conn.close()
    return BackupReport(path=path, size=path.stat().st_size, schema_version=version,
                        chain_id=chain_id, cursor=cursor, counts=counts)


def _check_target(out: Path, *, force: bool) -> None:
    if not out.parent.is_dir():
        raise UserError(f"directory {out.parent} does not exist; create it or fix --out")
    if out.is_dir():
        raise UserError(f"{out} is a directory; give a file name to --out")
    if out.exists() and not force:
        raise UserError(f"{out} already exists; choose another name or pass --force")


def _copy(db_path: Path, partial: Path) -> None:
    """One-step backup (one read transaction), then a self-contained rollback-journal file."""
    if not db_path.is_file():
        raise UserError(f"database {db_path} does not exist; fix db.path (or --config)")
    source = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=rw", uri=True,
                             timeout=BUSY_TIMEOUT_S)
    try:
        target = sqlite3.connect(partial)
        try:
            source.backup(target)
            target.execute("PRAGMA journal_mode = DELETE")
        finally:
            target.close()
    finally:
        source.close()
    _fsync(partial)


def _place(partial: Path, out: Path, *, force: bool) -> None:
    """Give the verified copy its name: atomically, and never over a file unless forced."""
    if force:
        os.replace(partial, out)
    else:
        try:
            os.link(partial, out)
        except FileExistsError as exc:
            raise UserError(f"{out} already exists; choose another name or pass --force") \
                from exc
    _fsync(out.parent)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_integrity(conn: sqlite3.Connection, name: str) -> None:
    problems = [" ".join(str(row[0]).split()) for row in conn.execute("PRAGMA integrity_check")]
    if problems != ["ok"]:
        raise UserError(f"{name} fails PRAGMA integrity_check ({len(problems)} problem(s), "
                        f"first: {problems[0][:200]}); the database itself is damaged: keep it "
                        "for analysis and restore the newest good backup")


def _schema_version(conn: sqlite3.Connection, name: str) -> int:
    row = conn.execute("SELECT MAX(version) FROM schema_migrations "
                       "WHERE component = 'listener'").fetchone()
    version = row[0]
    if not isinstance(version, int) or not 0 < version <= len(MIGRATIONS):
        raise UserError(f"{name} is not a blockhost database this version knows "
                        f"(listener schema {version}, expected 1..{len(MIGRATIONS)})")
    return version


def _counts(conn: sqlite3.Connection) -> dict[str, int]:
    present = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    return {table: _count(conn, table) for table in COUNTED if table in present}


def _count(conn: sqlite3.Connection, table: str) -> int:
    query = f"SELECT COUNT(*) FROM {table}"  # noqa: S608 - names come from COUNTED only
    return int(conn.execute(query).fetchone()[0])


@contextlib.contextmanager
def _sqlite_errors(what: str) -> Iterator[None]:
    """SQLite's exceptions (a corrupt file, "not a database", a schema we lack) as one line."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        raise UserError(f"{what}: {exc}; check db.path and the file (PRAGMA integrity_check)") \
            from exc
