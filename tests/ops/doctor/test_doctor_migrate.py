"""Doctor's "VMs awaiting `blockhost markers migrate`" line, on the simulator: an old-marker
VM our inventory knows fails it (and the start subset) naming the command; one it does not
know is named on a ✓ line and left alone; after `markers migrate` the line passes."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from listener.chain.journal import Store
from listener.config import load_config
from listener.devkit.devenv import DevEnv, sim_vm
from listener.ops.doctor.markers_check import NAME
from listener.ops.doctor.startup import start_failures
from listener.ops.markers import migrate_markers
from listener.runtime.wiring import pools_from_config
from provisioner.backend import marker_for, parse_marker
from provisioner.inventory import Inventory
from tests.ops.doctor.conftest import config_with, doctor_json

KNOWN, UNKNOWN = (100450, "blockhost-050", 50), (100460, "blockhost-060", 60)


def old_vm(env: DevEnv, vmid: int, name: str, sub: int) -> None:
    """A VM as made before deployment ids: our tag, the old marker, no `<tag>-<id>` tag."""
    env.sim.create_vm(vmid=vmid, name=name, pool="blockhost", tags=f"blockhost;sub-{sub}",
                      description=marker_for(sub, name) + "\nnotes")


def remember(config_path: Path, vmid: int, name: str, sub: int) -> None:
    """Our inventory's record of ``vmid`` (as the daemon wrote it before the upgrade)."""
    config = load_config(config_path, environ={}, broker_allocation=None)
    store = Store.open(config.db.path)
    try:
        Inventory(store.conn).reserve(name, pools=pools_from_config(config), node="pve1",
                                      subscription_id=sub, vmid=vmid)
    finally:
        store.close()


@pytest.fixture
def world(env: DevEnv, tmp_path: Path) -> Any:
    config = config_with(env, tmp_path, {"db": {"path": str(tmp_path / "blockhost.db")}})
    old_vm(env, *KNOWN)
    old_vm(env, *UNKNOWN)
    remember(config, *KNOWN)
    yield config
    for vmid in (KNOWN[0], UNKNOWN[0]):
        env.sim.delete_vm(vmid)


def test_known_old_marker_fails_doctor_and_the_start(
        world: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, checks = doctor_json(world, capsys)
    check = checks[NAME]
    assert code == 1 and not check["ok"]
    assert check["detail"].startswith("1 VM(s) of ours carry the marker")
    assert f"VM {KNOWN[0]} ({KNOWN[1]})" in check["detail"]
    assert str(UNKNOWN[0]) not in check["detail"]
    assert "`blockhost markers migrate`" in check["fix"]

    config = load_config(world, environ={}, broker_allocation=None)
    assert [c.name for c in start_failures(config)] == [NAME]


def test_after_migrate_only_the_unknown_vm_is_named(
        env: DevEnv, world: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = load_config(world, environ={}, broker_allocation=None)
    report = migrate_markers(config, dry_run=False)
    assert {o.vmid: o.action for o in report.outcomes}[KNOWN[0]] == "migrated"

    _code, checks = doctor_json(world, capsys)
    check = checks[NAME]
    assert check["ok"] and not check["skipped"], check
    assert f"VM {UNKNOWN[0]} ({UNKNOWN[1]})" in check["detail"]
    assert "not ours to touch" in check["detail"] and str(KNOWN[0]) not in check["detail"]
    assert start_failures(config) == []
    unknown = sim_vm(env.sim, UNKNOWN[0])
    assert unknown is not None
    marker = parse_marker(unknown["description"])
    assert marker is not None and marker.deployment is None  # doctor left it as it was


def test_doctor_changes_nothing(env: DevEnv, world: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    before = sim_vm(env.sim, KNOWN[0])
    doctor_json(world, capsys)
    assert sim_vm(env.sim, KNOWN[0]) == before
    conn = sqlite3.connect(world.parent / "blockhost.db")
    try:
        assert conn.execute("SELECT COUNT(*) FROM deployment").fetchone() == (0,)
    finally:
        conn.close()


def test_a_fresh_host_passes(env: DevEnv, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    config = config_with(env, tmp_path, {"db": {"path": str(tmp_path / "new.db")}})
    _code, checks = doctor_json(config, capsys)
    assert checks[NAME]["ok"] and "no VM carries our marker" in checks[NAME]["detail"]
    assert not (tmp_path / "new.db").exists()
