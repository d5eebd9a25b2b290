"""This host: the database (writable, following this deployment's chain, its header naming
this deployment) and the metrics port (free, unless the running listener holds it)."""

from __future__ import annotations

import fcntl
import os
import socket
import sqlite3
from pathlib import Path

from listener.config import Config
from listener.errors import UserError
from listener.ops.doctor.check import Check, failed, guarded, passed, skipped
from listener.runtime.instance_lock import lock_path
from listener.runtime.observability import parse_listen


def _nearest_dir(path: Path) -> Path:
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent


def _open_existing(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=5)


def _stored_chain_id(conn: sqlite3.Connection) -> int | None:
    row = conn.execute("SELECT chain_id FROM chain_state WHERE id = 1").fetchone()
    return None if row is None or row[0] is None else int(row[0])


def _foreign_deployment(conn: sqlite3.Connection, config: Config, path: Path) -> str | None:
    """Why the database belongs to another deployment (its header), None when it does not
    or has no header yet (written by the listener's first start after the upgrade)."""
    from listener.chain.deployment import check_database, deployment_of

    ours = deployment_of(config, None, conn)
    if ours is None:
        return None
    try:
        check_database(conn, ours, path)
    except sqlite3.OperationalError:  # no header table: a database from before it existed
        return None
    except UserError as exc:
        return str(exc).split(";", 1)[0]
    return None


def _existing_db_check(name: str, path: Path, config: Config) -> Check:
    expected = config.chain.chain_id
    conn = _open_existing(path)
    try:
        try:
            stored = _stored_chain_id(conn)
        except sqlite3.DatabaseError as exc:
            return failed(name, f"{path} is not a blockhost database ({exc})",
                          "point db.path at the listener's database")
        conn.execute("BEGIN IMMEDIATE")  # takes the write lock: proves we may write
        conn.execute("ROLLBACK")
        if expected is not None and stored is not None and stored != expected:
            return failed(name, f"{path} follows chain {stored}, the config says {expected}",
                          "point db.path at this deployment's database, or fix chain.chain_id")
        foreign = _foreign_deployment(conn, config, path)
    finally:
        conn.close()
    if foreign:
        return failed(name, foreign, "point db.path at this deployment's database")
    follows = f"follows chain {stored}" if stored is not None else "has not followed a chain yet"
    return passed(name, f"{path}: writable, {follows}")


def database_check(config: Config) -> Check:
    name, path = "database", config.db.path

    def run() -> Check:
        if path.exists():
            return _existing_db_check(name, path, config)
        parent = _nearest_dir(path)
        if not os.access(parent, os.W_OK | os.X_OK):
            return failed(name, f"{path} does not exist and {parent} is not writable here",
                          f"create {path.parent} owned by the user blockhost runs as")
        return passed(name, f"{path} does not exist yet; `blockhost listen` creates it")

    return guarded(name, "check db.path and its directory's owner", run)


def _listener_holds_lock(db_path: Path) -> bool:
    """Whether a running ``blockhost listen`` holds the database's lock (read without
    taking it: a shared lock fails only while someone holds it exclusively)."""
    try:
        fd = os.open(lock_path(db_path), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.pread(fd, 256, 0).decode(errors="replace").split(" ", 1)[-1].strip() == "listen"
    finally:
        os.close(fd)
    return False


def metrics_port_check(config: Config) -> Check:
    name, listen = "metrics port", config.metrics.listen

    def run() -> Check:
        if listen is None:
            return skipped(name, "metrics.listen is not set (nothing is served)")
        if _listener_holds_lock(config.db.path):
            return passed(name, f"{listen}: the running listener holds the database")
        host, port = parse_listen(listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                return failed(name, f"cannot bind {listen}: {exc.strerror}",
                              "stop what uses the port, or change metrics.listen")
        return passed(name, f"{listen} is free")

    return guarded(name, "check metrics.listen", run)
