"""The database and its ``-wal``/``-shm`` are 0600 from the first byte whatever the umask,
and a root-run CLI leaves files the daemon's user owns."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioner.storage.sqlite_db import connect


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The worst umask (0): every mode must come from the code, not from the environment."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def modes(db: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode)
            for p in sorted(db.parent.iterdir()) if p.name.startswith(db.name)}


def write_something(db: Path) -> None:
    conn = connect(db)
    conn.execute("CREATE TABLE IF NOT EXISTS t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    assert set(modes(db)) == {"state.db", "state.db-wal", "state.db-shm"}
    assert set(modes(db).values()) == {0o600}, modes(db)
    conn.close()


def test_database_files_are_private_under_an_open_umask(tmp_path: Path, open_umask: None) -> None:
    db = tmp_path / "state" / "state.db"
    write_something(db)
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700


def test_sidecars_left_readable_by_an_older_version_are_tightened(tmp_path: Path,
                                                                  open_umask: None) -> None:
    db = tmp_path / "state.db"
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        (tmp_path / name).touch(mode=0o644)
    os.chmod(db, 0o644)
    write_something(db)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: a root-run CLI is the case")
def test_a_root_run_cli_leaves_files_the_daemon_user_owns(tmp_path: Path) -> None:
    state_dir = tmp_path / "var-lib-blockhost"
    state_dir.mkdir(mode=0o700)
    os.chown(state_dir, 65534, 65534)  # the daemon's user owns its state directory
    db = state_dir / "state.db"
    write_something(db)
    owners = {p.name: (p.stat().st_uid, p.stat().st_gid)
              for p in state_dir.iterdir() if p.name.startswith("state.db")}
    assert set(owners.values()) == {(65534, 65534)}, owners
