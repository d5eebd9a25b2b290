"""`blockhost backup` (issue 14): a verified 0600 copy, never over an existing file unless
forced, dated copies pruned to the newest N, and one line for every failure."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from listener.chain.journal import Store
from listener.cli.main import main
from listener.ops.backup import verify_backup
from provisioner.inventory import Inventory


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A config whose db.path holds a fresh database with every component's tables."""
    db_path = tmp_path / "blockhost.db"
    store = Store.open(db_path)
    Inventory(store.conn)
    store.conn.execute("UPDATE chain_state SET chain_id = 31337, cursor = 42 WHERE id = 1")
    store.close()
    path = tmp_path / "blockhost.yaml"
    path.write_text(f"db: {{path: {db_path}}}\n")
    return path


def backup(config: Path, *args: str) -> int:
    return main(["--config", str(config), "backup", *args])


def error_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def test_backup_is_0600_verified_and_reports_what_it_copied(
        config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "copy.db"
    assert backup(config, "--out", str(out)) == 0
    assert out.stat().st_mode & 0o777 == 0o600
    line = capsys.readouterr().out.strip()
    assert str(out) in line and "cursor 42" in line and "events 0" in line
    report = verify_backup(out)
    assert (report.chain_id, report.cursor, report.size) == (31337, 42, out.stat().st_size)
    assert sqlite3.connect(out).execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert not list(tmp_path.glob(".copy.db.*"))  # no partial file left behind


def test_an_existing_file_is_never_overwritten_without_force(
        config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "copy.db"
    out.write_text("keep me")
    assert backup(config, "--out", str(out)) == 1
    assert out.read_text() == "keep me"
    [line] = error_lines(capsys)
    assert "already exists" in line and "--force" in line
    assert backup(config, "--out", str(out), "--force") == 0
    assert verify_backup(out).cursor == 42 and out.stat().st_mode & 0o777 == 0o600


def test_dir_writes_dated_backups_and_keeps_the_newest(
        config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    backups = tmp_path / "backups"
    backups.mkdir()
    for stamp in ("20200101T000000Z", "20200102T000000Z", "20200103T000000Z"):
        (backups / f"blockhost-{stamp}.db").write_text("old")
    (backups / "notes.txt").write_text("not a backup")
    assert backup(config, "--dir", str(backups), "--keep", "2", "--json") == 0
    names = sorted(p.name for p in backups.iterdir())
    assert names[0] == "blockhost-20200103T000000Z.db" and names[2] == "notes.txt"
    assert verify_backup(backups / names[1]).cursor == 42
    assert '"pruned": [' in capsys.readouterr().out


@pytest.mark.parametrize("content", [None, b"not a database at all " * 200])
def test_a_missing_or_corrupt_database_is_one_line(
        config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        content: bytes | None) -> None:
    db_path = tmp_path / "blockhost.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    if content is not None:
        db_path.write_bytes(content)
    out = tmp_path / "copy.db"
    assert backup(config, "--out", str(out)) == 1
    [line] = error_lines(capsys)
    assert str(db_path) in line
    assert not out.exists() and not list(tmp_path.glob(".copy.db.*"))


def test_a_damaged_page_fails_verification_and_leaves_no_backup(
        config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db_path = tmp_path / "blockhost.db"
    Store.open(db_path).close()  # checkpoints the WAL into the file
    data = bytearray(db_path.read_bytes())
    data[4096 * 2 + 8:4096 * 2 + 200] = b"\xff" * 192  # scribble over a table page
    db_path.write_bytes(bytes(data))
    out = tmp_path / "copy.db"
    assert backup(config, "--out", str(out)) == 1
    [line] = error_lines(capsys)
    assert str(db_path) in line and "integrity_check" in line
    assert not out.exists() and not list(tmp_path.glob(".copy.db.*"))


def test_usage_errors_exit_2(config: Path, tmp_path: Path) -> None:
    assert backup(config, "--out", str(tmp_path / "x.db"), "--keep", "3") == 2
    with pytest.raises(SystemExit) as exited:
        backup(config)
    assert exited.value.code == 2
