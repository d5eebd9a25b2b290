"""`blockhost backup` beside a real `blockhost listen` process while the chain moves (issue 14):
every copy is one consistent state that opens as our database."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from listener.chain.journal import Store
from listener.devkit.devenv import DevEnv
from listener.userkit.subscriber import subscribe
from tests.support.paths import REPO_ROOT

BIN = Path(sys.executable).parent


@pytest.fixture
def env(dev_env: DevEnv) -> DevEnv:
    return dev_env


def buy(env: DevEnv, user_index: int) -> int:
    env.fund(env.user(user_index))
    return subscribe(env.w3, env.user(user_index),
                     subscription_contract=env.deployment["subscriptions"],
                     server_public_key=env.server_public_key, plan_id=1,
                     days=5).subscription_id


def backup(env: DevEnv, out: Path) -> dict[str, object]:
    done = subprocess.run([str(BIN / "blockhost"), "--config", str(env.config_path), "backup",
                           "--out", str(out), "--json"],
                          capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    report: dict[str, object] = json.loads(done.stdout)
    return report


def consistent(path: Path) -> tuple[int, int]:
    """The copy's facts agree with its journal and cursor: (cursor, subscriptions)."""
    store = Store.open(path)
    try:
        cursor = store.chain_state().cursor
        assert cursor is not None
        journaled = {row[0] for row in store.conn.execute(
            "SELECT subscription_id FROM events WHERE name = 'SubscriptionCreated' AND applied = 1")}
        top = store.conn.execute("SELECT MAX(block_number) FROM events WHERE applied = 1")
        assert (top.fetchone()[0] or 0) <= cursor
        subscriptions = {sub.id for sub in store.subscriptions()}
        assert subscriptions == journaled
        return cursor, len(subscriptions)
    finally:
        store.close()


def test_backups_taken_while_the_listener_writes_are_consistent(
        env: DevEnv, tmp_path: Path) -> None:
    listener = env.start_listener()
    first = buy(env, 1)
    env.wait_for("the first subscription to be active",
                 lambda: (env.subscription(first) or {}).get("state") == "active",
                 timeout=120, listener=listener)
    cursors, ids = [], [first]
    for round_ in range(4):  # the listener journals, provisions and mints meanwhile
        ids.append(buy(env, 2 + round_ % 2))
        env.mine(3)
        out = tmp_path / f"backup-{round_}.db"
        report = backup(env, out)
        assert out.stat().st_mode & 0o777 == 0o600
        assert report["path"] == str(out) and report["size"] == out.stat().st_size
        cursor, count = consistent(out)
        assert report["cursor"] == cursor and count >= 1
        cursors.append(cursor)
    assert listener.poll() is None and cursors == sorted(cursors)
    env.wait_for("every subscription to be active",
                 lambda: all((env.subscription(i) or {}).get("state") == "active" for i in ids),
                 timeout=120, listener=listener)
    last = tmp_path / "backup-last.db"
    backup(env, last)
    assert consistent(last)[1] == len(ids)
