"""The upgrade day with real processes: a VM made before deployment ids (old marker, known to
our inventory) stops `blockhost listen` with one line naming the count and the command; after
`blockhost markers migrate` the daemon starts and serves it to its end (expiry handled, no
dead letter). An old-marker VM our inventory never knew stays untouched throughout."""

from __future__ import annotations

import pytest

from listener.chain.deployment import deployment_id
from listener.devkit.devenv import CHAIN_ID, DevEnv, sim_vm
from listener.userkit.subscriber import subscribe
from provisioner.backend import marker_for
from tests.support.cli import run_blockhost

pytestmark = pytest.mark.slow

DAY = 86400
STRANGER = 100400  # an old-marker VM our inventory never knew


def made_before_ids(env: DevEnv, vmid: int, ours: str) -> None:
    """Turn our VM back into what the previous release made: old marker, no id tag."""
    vm = sim_vm(env.sim, vmid)
    assert vm is not None
    env.sim.update_vm(vmid, config={
        "description": marker_for(1, vm["name"]) + "\n" + vm["description"].split("\n", 1)[-1],
        "tags": ";".join(t for t in vm["tags"] if t != f"blockhost-{ours}")})


def test_listen_refuses_until_markers_migrate_then_serves_the_vm(dev_env: DevEnv) -> None:
    env = dev_env
    ours = deployment_id(CHAIN_ID, env.deployment["subscriptions"], env.deployment["nft"])
    listener = env.start_listener()
    env.fund(env.user(1))
    sub_id = subscribe(env.w3, env.user(1), subscription_contract=env.deployment["subscriptions"],
                       server_public_key=env.server_public_key, plan_id=1,
                       days=1).subscription_id
    assert sub_id == 1
    vm = env.wait_for("the VM", lambda: ((env.subscription(sub_id) or {}).get("state") == "active"
                                         and env.subscription(sub_id)), listener=listener)["vm"]
    listener.terminate()
    assert listener.wait(timeout=30) == 0
    made_before_ids(env, vm["vmid"], ours)
    env.sim.create_vm(vmid=STRANGER, name="blockhost-077", pool="blockhost",
                      tags="blockhost;sub-77", description=marker_for(77, "blockhost-077"))
    stranger = sim_vm(env.sim, STRANGER)

    refused = run_blockhost(env.config_path, "listen")
    assert refused.returncode == 1, refused.stderr[-2000:]
    lines = refused.stderr.strip().splitlines()
    assert lines[0].startswith("blockhost: error: refusing to start: 1 start check(s) failed")
    assert len(lines) == 2 and lines[1].startswith(
        "✗ VMs awaiting `blockhost markers migrate`: 1 VM(s) of ours"), lines
    assert f"VM {vm['vmid']}" in lines[1] and "run `blockhost markers migrate`" in lines[1]
    assert str(STRANGER) not in lines[1]

    migrated = run_blockhost(env.config_path, "markers", "migrate")
    assert migrated.returncode == 0, migrated.stderr[-2000:]

    listener = env.start_listener()
    env.wait_for("the listener to serve", lambda: env.subscription(sub_id), listener=listener)
    env.advance_time(3 * DAY)  # past expiry and the one grace day: the VM is destroyed
    env.wait_for("the expired VM destroyed",
                 lambda: (env.subscription(sub_id) or {}).get("state") == "destroyed",
                 listener=listener, timeout=120)
    assert sim_vm(env.sim, vm["vmid"]) is None
    assert env.status()["dead_letters"] == 0
    assert sim_vm(env.sim, STRANGER) == stranger  # not ours: never touched
    listener.terminate()
    assert listener.wait(timeout=30) == 0
