"""`blockhost gc` as a safety net while the listener is down (issue 13 item 6), on a real anvil
chain and the PVE simulator: it judges by the chain's confirmed head (not the journal's frozen
time), and re-checks every step, on chain too, right before taking it."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from listener.config import load_config
from listener.devkit.devenv import DevEnv, sim_vm
from listener.ops.gc import GcMode, execute_gc, plan_gc
from listener.userkit.subscriber import extend, subscribe
from tests.support.paths import REPO_ROOT

BIN = Path(sys.executable).parent
DAY = 86_400


@pytest.fixture
def env(dev_env: DevEnv) -> DevEnv:
    return dev_env


def buy(env: DevEnv, user_index: int) -> tuple[int, int]:
    """A one-day subscription: (its id, its expiresAt)."""
    env.fund(env.user(user_index))
    result = subscribe(env.w3, env.user(user_index),
                       subscription_contract=env.deployment["subscriptions"],
                       server_public_key=env.server_public_key, plan_id=1, days=1)
    return result.subscription_id, result.expires_at


def serve_then_stop_listener(env: DevEnv, ids: list[int]) -> dict[int, int]:
    """Run the listener until every subscription is served, then SIGKILL it: the VMIDs."""
    listener = env.start_listener()
    env.wait_for("every VM to run",
                 lambda: all((env.subscription(i) or {}).get("state") == "active" for i in ids),
                 timeout=120, listener=listener)
    env.kill_listener(listener)
    return {i: (env.subscription(i) or {})["vm"]["vmid"] for i in ids}


def gc(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "blockhost"), "--config", str(config), "gc", *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)


def gc_json(env: DevEnv, *args: str) -> dict[str, Any]:
    proc = gc(env.config_path, "--json", *args)
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def steps(report: dict[str, Any]) -> list[tuple[int | None, str, str]]:
    return [(s["subscription_id"], s["action"], s["result"]) for s in report["steps"]]


def test_gc_suspends_by_the_chains_time_while_the_listener_is_down(env: DevEnv) -> None:
    sub_id, expires_at = buy(env, 1)
    vmid = serve_then_stop_listener(env, [sub_id])[sub_id]
    env.advance_time(DAY + 60)
    env.mine(3)  # the expired block is confirmed (2 confirmations); the journal never saw it

    dry = gc_json(env)
    assert steps(dry) == [(sub_id, "stop", "planned")]
    assert dry["chain_time_source"] == "rpc" and dry["chain_time"] > expires_at
    assert (sim_vm(env.sim, vmid) or {})["status"] == "running"  # a dry run touches nothing
    assert "from the RPC" in gc(env.config_path).stdout.splitlines()[0]

    assert steps(gc_json(env, "--execute")) == [(sub_id, "stop", "done")]
    assert (sim_vm(env.sim, vmid) or {})["status"] == "stopped"


def test_a_renewal_on_chain_between_plan_and_execute_is_not_destroyed(env: DevEnv) -> None:
    (gone, _), (renewed, _) = buy(env, 1), buy(env, 2)
    vmids = serve_then_stop_listener(env, [gone, renewed])
    env.advance_time(2 * DAY + 60)  # past expiry and the one-day grace
    env.mine(3)
    config = load_config(env.config_path, environ={}, broker_allocation=None)
    report = plan_gc(config, mode=GcMode.ALL, grace_days=None)
    assert [(v.subscription_id, v.action, v.result) for v in report.verdicts] == [
        (gone, "destroy", "planned"), (renewed, "destroy", "planned")]

    # Paid for while the listener is down: on chain, not in the journal.
    extend(env.w3, env.user(2), subscription_contract=env.deployment["subscriptions"],
           subscription_id=renewed, days=3)
    results = {v.subscription_id: v.result for v in execute_gc(config, report).verdicts}
    assert results[gone] == "done" and sim_vm(env.sim, vmids[gone]) is None
    assert results[renewed].startswith("skipped: still paid on chain until"), results
    assert sim_vm(env.sim, vmids[renewed]) is not None
    # The next timer run still leaves it alone (and that is no failure).
    assert steps(gc_json(env, "--execute"))[0][2].startswith("skipped: still paid on chain")
    assert sim_vm(env.sim, vmids[renewed]) is not None


def test_without_an_rpc_the_stored_time_is_labelled_and_no_subscription_is_touched(
        env: DevEnv) -> None:
    sub_id, expires_at = buy(env, 1)
    vmid = serve_then_stop_listener(env, [sub_id])[sub_id]
    with sqlite3.connect(env.db_path) as conn:  # as if the listener had reached the expiry
        conn.execute("UPDATE chain_state SET chain_time = ?", (expires_at + 60,))
    conn.close()
    document = yaml.safe_load(env.config_path.read_text())
    document["chain"]["rpc_urls"] = [f"http://127.0.0.1:{closed_port()}"]
    no_rpc = env.workdir / "no-rpc.yaml"
    no_rpc.write_text(yaml.safe_dump(document))

    proc = gc(no_rpc, "--execute")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    first, step = proc.stdout.splitlines()
    assert "STORED" in first and "no RPC answered" in first
    assert f"subscription #{sub_id}" in step and "failed: not checked on chain" in step
    assert (sim_vm(env.sim, vmid) or {})["status"] == "running"


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
