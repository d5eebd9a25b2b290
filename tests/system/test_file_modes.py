"""Every file the product writes is private: after a purchase -> expiry -> destroy cycle with
the real daemon (anvil, the PVE simulator) and a backup, under the usual shell umask 022.

The daemon sets umask 077 itself and creates the database 0600 before SQLite writes, so its
``-wal``/``-shm`` inherit that mode; snippets hold the VM's secret key and are 0600 as long as
they exist; the clone journal and backups are private too. The Terraform directory and its
archive are checked in tests/provisioner/terraform (the bpg provider cannot run here)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from listener.devkit.devenv import DevEnv
from listener.userkit.subscriber import subscribe
from tests.support.paths import REPO_ROOT

DAY = 86400
#: written by the test harness (devkit), not by the product under test
HARNESS = {"anvil", "pvesim", "blockhost.yaml", "listener.log"}


@pytest.fixture
def env(dev_env: DevEnv) -> Iterator[DevEnv]:
    old = os.umask(0o022)  # what an operator's shell has; the product must not rely on it
    try:
        yield dev_env
    finally:
        os.umask(old)


def product_paths(workdir: Path) -> list[Path]:
    out = []
    for path in sorted(workdir.rglob("*")):
        if path.relative_to(workdir).parts[0] not in HARNESS:
            out.append(path)
    return out


def loose(paths: list[Path]) -> dict[str, str]:
    """Files not 0600 and directories (that we made) not 0700, with their modes."""
    bad = {}
    for path in paths:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if path.is_file() and mode != 0o600:
            bad[str(path)] = oct(mode)
        elif path.is_dir() and path.name != "snippets" and mode != 0o700:
            bad[str(path)] = oct(mode)  # PVE's snippets directory belongs to the storage
    return bad


def cli(env: DevEnv, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "listener.cli", "--config", str(env.config_path),
                    *args], check=True, cwd=REPO_ROOT, capture_output=True, timeout=120)


def test_purchase_expiry_destroy_leaves_only_private_files(env: DevEnv) -> None:
    user = env.user(1)
    env.fund(user)
    sub_id = subscribe(env.w3, user, subscription_contract=env.deployment["subscriptions"],
                       server_public_key=env.server_public_key, plan_id=1,
                       days=1).subscription_id
    listener = env.start_listener()
    env.wait_for("the VM", lambda: (env.subscription(sub_id) or {}).get("state") == "active",
                 timeout=120, listener=listener)
    snippets = list((env.workdir / "snippets" / "snippets").glob("*-user.yaml"))
    assert snippets and loose(snippets) == {}  # the user data, while the VM lives
    live_db = [env.db_path.with_name(env.db_path.name + s) for s in ("", "-wal", "-shm")]
    assert all(p.exists() for p in live_db) and loose(live_db) == {}  # while SQLite has them
    cli(env, "status", "--json")  # an operator's CLI beside the running daemon
    env.advance_time(3 * DAY)
    env.wait_for("destroy after expiry and grace", lambda: (
        env.subscription(sub_id) or {}).get("state") == "destroyed", timeout=120,
        listener=listener)
    cli(env, "backup", "--dir", str(env.workdir / "backups"), "--keep", "2")
    env.close()

    paths = product_paths(env.workdir)
    names = {p.name for p in paths}
    assert {"blockhost.db", "blockhost.db.lock", "server.key", "pve-token"} <= names
    assert any(p.parent.name == "backups" for p in paths if p.is_file())
    assert not list((env.workdir / "snippets" / "snippets").glob("*-user.yaml"))  # destroyed
    assert loose(paths) == {}
