"""GC verdicts for VMs made by hand (`vm create`): pure, exhaustive over states and times."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

import pytest

from listener.ops.gc import GcMode, Verdict, execute, manual_action, plan_manual
from listener.reconcile.decide import Action
from provisioner.inventory import Inventory, ManualRequest, Pools
from provisioner.storage.sqlite_db import connect

EXPIRES, GRACE = 1_000_000, 86_400
DAY = 86_400
STATES = ("reserved", "created", "running", "stopped", "destroyed")


@pytest.mark.parametrize(("state", "offset"), list(itertools.product(
    STATES, (-1, 0, 1, GRACE - 1, GRACE, GRACE + 1))))
def test_manual_action_table(state: str, offset: int) -> None:
    action = manual_action(EXPIRES, EXPIRES + offset, GRACE, state)
    if state in ("reserved", "destroyed") or offset < 0:
        assert action is None  # still being built, gone, or not expired: never touched
    elif offset >= GRACE:
        assert action is Action.DESTROY
    elif state == "stopped":
        assert action is None
    else:
        assert action is Action.STOP


def test_zero_grace_destroys_at_expiry() -> None:
    assert manual_action(EXPIRES, EXPIRES, 0, "running") is Action.DESTROY
    assert manual_action(EXPIRES, EXPIRES - 1, 0, "running") is None


@pytest.fixture
def inventory(tmp_path: Path) -> Inventory:
    conn: sqlite3.Connection = connect(tmp_path / "gc.db")
    return Inventory(conn)


POOLS = Pools(vmid_first=100, vmid_last=199, ipv4_first="10.0.0.10", ipv4_last="10.0.0.99",
              ipv4_prefixlen=24, ipv4_gateway="10.0.0.1")


def test_plan_manual_sees_only_manual_vms_and_respects_the_mode(inventory: Inventory) -> None:
    old = inventory.reserve("old", pools=POOLS, node="pve1",
                            manual=ManualRequest("{}", EXPIRES - 2 * GRACE))
    inventory.set_state(old.id, "running")
    late = inventory.reserve("late", pools=POOLS, node="pve1",
                             manual=ManualRequest("{}", EXPIRES - 10))
    inventory.set_state(late.id, "running")
    fresh = inventory.reserve("fresh", pools=POOLS, node="pve1",
                              manual=ManualRequest("{}", EXPIRES + 10))
    inventory.set_state(fresh.id, "running")
    sub = inventory.reserve("sub-vm", pools=POOLS, node="pve1", subscription_id=4)
    inventory.set_state(sub.id, "running")

    got = {v.vm_name: v.action for v in plan_manual(inventory, now=EXPIRES, grace_seconds=GRACE)}
    assert got == {"old": "destroy", "late": "stop"}
    only_stop = plan_manual(inventory, now=EXPIRES, grace_seconds=GRACE,
                            mode=GcMode.SUSPEND_ONLY)
    assert [v.vm_name for v in only_stop] == ["late"]
    assert all(v.subscription_id is None for v in only_stop)


def test_execute_routes_manual_verdicts_and_records_failures() -> None:
    calls: list[tuple[str, object, Action]] = []
    manual = Verdict(None, "stop", "box", 100, "pve1", 1, 2)
    paid = Verdict(7, "destroy", "blockhost-7", 101, "pve1", 1, 2)
    done = execute([manual, paid], lambda sub, a: calls.append(("sub", sub, a)),
                   lambda name, a: calls.append(("manual", name, a)))
    assert calls == [("manual", "box", Action.STOP), ("sub", 7, Action.DESTROY)]
    assert [v.result for v in done] == ["done", "done"]
    failed = execute([manual], lambda *_: None)  # no manual applier: recorded, not raised
    assert failed[0].result.startswith("failed")


def test_still_due_allows_only_the_same_step_or_a_stop_before_a_destroy() -> None:
    from listener.ops.gc_recheck import still_due

    assert still_due(Action.STOP, Action.STOP) and still_due(Action.STOP, Action.DESTROY)
    assert still_due(Action.DESTROY, Action.DESTROY)
    assert not still_due(Action.DESTROY, Action.STOP) and not still_due(Action.STOP, None)
    assert not still_due(Action.DESTROY, None) and not still_due(Action.STOP, Action.START)


def test_a_manual_vm_extended_after_the_plan_is_skipped(tmp_path: Path) -> None:
    from listener.ops.gc import recheck_manual

    conn = connect(tmp_path / "gc.db")
    inventory = Inventory(conn)
    box = inventory.reserve("box", pools=POOLS, node="pve1",
                            manual=ManualRequest("{}", EXPIRES - 10))
    inventory.set_state(box.id, "running")
    [verdict] = plan_manual(inventory, now=EXPIRES, grace_seconds=GRACE)
    assert recheck_manual(inventory, verdict, now=EXPIRES, grace_seconds=GRACE) is None
    conn.execute("UPDATE manual_vms SET expires_at = ? WHERE vm_id = ?",
                           (EXPIRES + DAY, box.id))
    changed = recheck_manual(inventory, verdict, now=EXPIRES, grace_seconds=GRACE)
    assert changed == "skipped: now due for nothing"
    inventory.release(box.id)
    assert recheck_manual(inventory, verdict, now=EXPIRES, grace_seconds=GRACE) == \
        "skipped: the VM is gone or was replaced since the plan"
