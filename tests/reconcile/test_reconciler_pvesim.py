"""The reconciler against the real PVE simulator over HTTPS: drift, foreign VMs, dead letters, gc.

The NFT side is not under test here: subscriptions are journaled as already minted (token id
set), so every step exercised is a Proxmox step through the real backend and inventory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from listener.ops.gc import GcMode, execute, plan
from listener.reconcile.dead_letters import DeadLetters
from listener.reconcile.reconciler import Reconciler
from tests.support.reconcile_world import EXPIRES, GRACE_DAYS, World


def test_a_vm_deleted_behind_our_back_is_rebuilt_on_its_ids(world: World) -> None:
    world.paid(1)
    world.reconcile(1)
    record = world.vm(1)
    assert record.state == "running" and world.sim.vm(record.vmid)["status"] == "running"
    first_uuid = record.smbios_uuid
    world.sim.control("DELETE", f"vms/{record.vmid}")

    assert world.reconcile(1) == "create_vm"
    rebuilt = world.vm(1)
    assert (rebuilt.id, rebuilt.vmid, rebuilt.ipv4) == (record.id, record.vmid, record.ipv4)
    assert rebuilt.smbios_uuid != first_uuid  # a new instance, fingerprinted again
    assert world.sim.vm(record.vmid)["status"] == "running"


def test_a_vm_stopped_by_hand_is_started_again(world: World) -> None:
    world.paid(1)
    world.reconcile(1)
    vmid = world.vm(1).vmid
    world.sim.control("POST", f"vms/{vmid}", {"status": "stopped"})
    assert world.reconcile(1) == "start"
    assert world.sim.vm(vmid)["status"] == "running"


def test_a_foreign_vm_on_our_vmid_is_never_touched(world: World) -> None:
    world.sim.control("POST", "vms", {"vmid": 100000, "node": "pve1", "name": "someone-else",
                                      "status": "running"})
    world.paid(1)
    world.reconcile(1)
    record = world.vm(1)
    assert record.vmid == 100001 and record.state == "running"
    assert world.inventory.foreign_vmids().keys() == {100000}
    foreign = world.sim.vm(100000)
    assert foreign["name"] == "someone-else" and foreign["status"] == "running"
    steps = world.progress.steps(1)
    assert ("create_vm", "failed") in {(s, p) for s, p, _ in steps}


def test_ownership_mismatch_is_refused_and_dead_lettered(world: World) -> None:
    world.paid(1)
    world.reconcile(1)
    record = world.vm(1)
    # Someone rewrote the description: the VM is no longer provably ours.
    world.sim.control("POST", f"vms/{record.vmid}",
                      {"config": {"description": "managed-by=blockhost;sub=99;name=other"}})
    past_grace = EXPIRES + GRACE_DAYS * 86400 + 1
    assert world.reconcile(1, past_grace) == "observe"  # refused before any step is chosen
    assert world.sim.vm(record.vmid) is not None  # left alone
    assert world.vm(1) is not None  # and not forgotten
    [letter] = DeadLetters(world.store.conn).list()
    assert letter.subscription_id == 1 and letter.action == "observe"
    assert "marker" in letter.reason.lower() and str(record.vmid) in letter.reason


def test_an_edited_marker_never_clones_a_second_vm_on_the_same_ip(world: World) -> None:
    """Issue 13 item 8: the VM is not "missing" because its Notes were edited."""
    world.paid(1)
    world.reconcile(1)
    record = world.vm(1)
    world.sim.control("POST", f"vms/{record.vmid}", {"config": {"description": "edited by hand"}})
    for _ in range(3):
        world.reconcile(1)  # paid: the old code cloned a new VM here
    pool = [vm for vm in world.sim.state()["vms"] if vm.get("pool") == "blockhost"]
    assert [vm["vmid"] for vm in pool] == [record.vmid]
    assert world.vm(1).id == record.id and world.inventory.foreign_vmids() == {}
    [letter] = DeadLetters(world.store.conn).list()
    assert "marker" in letter.reason.lower()


def test_gc_plans_and_applies_the_daemons_verdicts(world: World) -> None:
    for sub_id in (1, 2, 3):
        world.paid(sub_id, expires_at=EXPIRES + sub_id * 86400)
        world.reconcile(sub_id)
    chain_time = EXPIRES + 2 * 86400 + 10  # #1 past grace, #2 expired, #3 paid
    grace = GRACE_DAYS * 86400

    def steps(mode: GcMode, at: int = chain_time, grace_s: int = grace) -> list[tuple[int, str]]:
        found = plan(world.store, world.inventory, chain_time=at, grace_seconds=grace_s,
                     mode=mode)
        return [(v.subscription_id, v.action) for v in found]

    assert steps(GcMode.ALL) == [(1, "destroy"), (2, "stop")]
    assert steps(GcMode.SUSPEND_ONLY) == [(2, "stop")]
    assert steps(GcMode.DESTROY_ONLY) == [(1, "destroy")]
    assert steps(GcMode.ALL, grace_s=30 * 86400) == [(1, "stop"), (2, "stop")]  # --grace-days

    vmid1 = world.vm(1).vmid
    done = execute(plan(world.store, world.inventory, chain_time=chain_time,
                        grace_seconds=grace), world.reconciler.apply_one)
    assert [v.result for v in done] == ["done", "done"]
    assert world.vm(1) is None and world.sim.vm(vmid1) is None
    assert world.sim.vm(world.vm(2).vmid)["status"] == "stopped"
    assert world.sim.vm(world.vm(3).vmid)["status"] == "running"
    assert world.inventory.leases()["vmid"] == {str(world.vm(2).vmid), str(world.vm(3).vmid)}
    # Idempotent: the same run again finds only what is still due.
    assert steps(GcMode.ALL) == []


def test_dead_letter_lifecycle(world: World) -> None:
    letters = DeadLetters(world.store.conn)
    first = letters.add(5, action="create_vm", reason="x", attempts=10, facts_block=7)
    assert letters.add(5, action="create_vm", reason="y", attempts=11, facts_block=7) == first
    assert letters.open_count() == 1 and letters.blocked() == {5: None}
    letters.drop(first)
    assert letters.blocked() == {5: 7}
    from listener.reconcile.dead_letters import is_blocked

    assert is_blocked(letters.blocked(), 5, 7) and not is_blocked(letters.blocked(), 5, 8)
    second = letters.add(5, action="start", reason="z", attempts=10, facts_block=8)
    assert letters.blocked() == {5: None}
    letters.retry(second)
    assert letters.open_count() == 0 and [e.state for e in letters.list(include_resolved=True)] \
        == ["dropped", "retried"]
    from listener.reconcile.dead_letters import DeadLetterError

    with pytest.raises(DeadLetterError, match="already retried"):
        letters.drop(second)
    with pytest.raises(DeadLetterError, match="no dead letter"):
        letters.retry(999)



def test_vm_list_and_destroy_by_hand(world: World) -> None:
    from listener.errors import UserError
    from listener.ops.vm_admin import check_destroyable, destroy_vm, list_vms
    from provisioner.errors import OwnershipMismatch

    for sub_id in (1, 2):
        world.paid(sub_id)
        world.reconcile(sub_id)
    vm1, vm2 = world.vm(1), world.vm(2)
    world.sim.control("DELETE", f"vms/{vm2.vmid}")
    rows = {r.name: r for r in list_vms(world.inventory, world.services.backend)}
    assert (rows[vm1.name].power, rows[vm2.name].power) == ("running", "missing")

    # Paid (chain time before expiry): refused, nothing touched.
    world.store.conn.execute("UPDATE chain_state SET chain_time = ?", (EXPIRES - 10,))
    with pytest.raises(UserError, match="would build it again"):
        check_destroyable(world.store, vm1, grace_seconds=GRACE_DAYS * 86400)
    world.store.conn.execute("UPDATE chain_state SET chain_time = ?", (EXPIRES + 10,))
    check_destroyable(world.store, vm1, grace_seconds=GRACE_DAYS * 86400)

    # A VM whose markers were changed is refused and stays in the inventory.
    world.sim.control("POST", f"vms/{vm1.vmid}",
                      {"config": {"description": "managed-by=blockhost;sub=7;name=x"}})
    with pytest.raises(OwnershipMismatch):
        destroy_vm(world.store, world.inventory, world.services.backend, vm1.name)
    assert world.vm(1) is not None and world.sim.vm(vm1.vmid) is not None
    # One already gone on Proxmox is simply released.
    destroy_vm(world.store, world.inventory, world.services.backend, vm2.name)
    assert world.vm(2) is None and str(vm2.vmid) not in world.inventory.leases()["vmid"]
    with pytest.raises(UserError, match="no live VM"):
        destroy_vm(world.store, world.inventory, world.services.backend, vm2.name)


HOOK = ("import json, os, sys; open(sys.argv[1], 'a').write(json.dumps({k: v for k, v in "
        "os.environ.items() if k.startswith('BLOCKHOST_')}) + '\\n')")


def test_network_hooks_run_after_create_and_before_release(tmp_path: Path, pvesim: Any) -> None:
    import json
    import sys

    record_file = tmp_path / "hooks.jsonl"
    hook = [sys.executable, "-c", HOOK, str(record_file)]
    world = World(tmp_path, pvesim, hooks={"on_create": [hook], "on_destroy": [hook]})
    try:
        world.paid(1)
        world.reconcile(1)
        vm = world.vm(1)
        world.reconcile(1, EXPIRES + GRACE_DAYS * 86400 + 1)
        assert world.vm(1) is None
    finally:
        world.store.close()
    events = [json.loads(line) for line in record_file.read_text().splitlines()]
    assert [e["BLOCKHOST_EVENT"] for e in events] == ["created", "destroyed"]
    for event in events:
        assert event["BLOCKHOST_VMID"] == str(vm.vmid)
        assert event["BLOCKHOST_IPV4"] == vm.ipv4 and event["BLOCKHOST_SUBSCRIPTION_ID"] == "1"


def test_a_failing_create_hook_is_retried_and_the_vm_adopted(tmp_path: Path, pvesim: Any) -> None:
    import sys

    flag = tmp_path / "hook-may-pass"
    hook = [sys.executable, "-c", "import os, sys; sys.exit(0 if os.path.exists(sys.argv[1]) "
            "else 3)", str(flag)]
    world = World(tmp_path, pvesim, hooks={"on_create": [hook]})
    try:
        world.paid(1)
        assert world.reconcile(1) == "create_vm"  # built, but the hook failed
        first = world.vm(1)
        assert first.state == "reserved" and "hook" in (world.progress.of(1).last_error or "")
        assert world.sim.vm(first.vmid) is not None
        flag.touch()
        world.reconcile(1)
        again = world.vm(1)
        assert again.state == "running" and again.vmid == first.vmid
        assert len([v for v in world.sim.state()["vms"] if v.get("pool") == "blockhost"]) == 1
    finally:
        world.store.close()


def test_a_full_node_defers_creation_without_failing(world: World) -> None:
    from provisioner.placement import PlacementLimiter, PlacementLimits

    limiter = PlacementLimiter(PlacementLimits(per_node=1, total=4))
    assert limiter.try_acquire_node("pve1")  # another create holds the node's only slot
    reconciler = Reconciler(world.services, choose_node=lambda _size: "pve1", limiter=limiter)
    world.paid(1)
    assert reconciler.reconcile(1, EXPIRES - 100) == "create_vm"
    assert world.vm(1).state == "reserved"
    progress = world.progress.of(1)
    assert progress.attempts == 0 and progress.last_error is None
    limiter.release("pve1")
    reconciler.reconcile(1, EXPIRES - 100)
    assert world.vm(1).state == "running" and limiter.inflight() == {}


def test_another_deployments_vm_under_our_name_is_foreign_not_ours(world: World) -> None:
    """A second deployment with default names makes a VM called like ours on a VMID we lost:
    its marker names another deployment, so it is never taken for ours (nor touched)."""
    world.paid(1)
    world.reconcile(1)
    record = world.vm(1)
    world.sim.control("POST", f"vms/{record.vmid}", {"config": {
        "description": f"managed-by=blockhost;deployment=deadbeef;sub=1;name={record.name}"}})
    for _ in range(2):
        world.reconcile(1)
    assert world.sim.vm(record.vmid)["status"] == "running"  # left alone
    pool = [vm for vm in world.sim.state()["vms"] if vm.get("pool") == "blockhost"]
    assert [vm["vmid"] for vm in pool] == [record.vmid]  # and nothing cloned over it
    [letter] = DeadLetters(world.store.conn).list()
    assert "marker" in letter.reason.lower() and str(record.vmid) in letter.reason
