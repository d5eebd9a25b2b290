"""The pure decisions of `blockhost recover` (listener/reconcile/recover_plan.py): every branch
of comparing Proxmox's VMs of ours with the inventory."""

from __future__ import annotations

import itertools

import pytest

from listener.reconcile.recover_plan import (
    KnownVm,
    Lookup,
    SeenVm,
    inventory_state,
    lookups,
    needs_journal,
    parse_ipconfig,
    plan_vms,
    signer_note,
)


def seen(vmid: int, sub: int | None, *, power: str = "running", ipv4: str | None = None,
         ipv6: str | None = None, name: str | None = None) -> SeenVm:
    return SeenVm(vmid=vmid, node="pve1", name=name or f"blockhost-{sub or 0:03d}",
                  subscription_id=sub, power=power,
                  ipv4=ipv4 if ipv4 is not None else f"10.0.0.{vmid % 100}", ipv6=ipv6)


def known(record_id: int, vmid: int, sub: int | None, *, state: str = "running",
          ipv4: str | None = None, name: str | None = None) -> KnownVm:
    return KnownVm(id=record_id, vmid=vmid, name=name or f"blockhost-{sub or 0:03d}",
                   subscription_id=sub, state=state,
                   ipv4=ipv4 if ipv4 is not None else f"10.0.0.{vmid % 100}", ipv6=None)


def test_a_vm_the_database_forgot_is_adopted_with_its_power_state() -> None:
    plan = plan_vms([seen(101, 1), seen(102, 2, power="stopped")], [])
    assert [(a.vm.vmid, a.state) for a in plan.adopt] == [(101, "running"), (102, "stopped")]
    assert plan.changes == 2 and not plan.skipped and not plan.missing


def test_a_vm_the_database_knows_changes_nothing() -> None:
    plan = plan_vms([seen(101, 1)], [known(7, 101, 1)])
    assert plan.changes == 0 and not plan.skipped and not plan.missing


@pytest.mark.parametrize("power,state", [("running", "running"), ("stopped", "stopped"),
                                         ("paused", "stopped"), ("unknown", "stopped")])
def test_a_reserved_record_whose_vm_exists_is_recorded_as_built(power: str, state: str) -> None:
    plan = plan_vms([seen(101, 1, power=power)], [known(7, 101, 1, state="reserved")])
    assert [(m.record_id, m.state) for m in plan.mark_built] == [(7, state)]
    assert not plan.adopt
    assert inventory_state(power) == state


def test_a_vmid_held_by_another_record_is_left_alone() -> None:
    plan = plan_vms([seen(101, 1)], [known(7, 101, 2)])
    assert not plan.adopt and not plan.mark_built
    assert [s.vmid for s in plan.skipped] == [101]
    assert "held in the database by blockhost-002" in plan.skipped[0].reason


def test_a_vm_made_by_hand_is_not_adopted() -> None:
    plan = plan_vms([seen(101, None, name="manual-vm")], [])
    assert not plan.adopt and "made by hand" in plan.skipped[0].reason


def test_a_vm_without_a_static_address_is_not_adopted() -> None:
    vm = SeenVm(vmid=101, node="pve1", name="blockhost-001", subscription_id=1,
                power="running", ipv4=None, ipv6=None)
    plan = plan_vms([vm], [])
    assert not plan.adopt and "no IPv4" in plan.skipped[0].reason


def test_an_address_leased_to_another_record_is_never_handed_twice() -> None:
    plan = plan_vms([seen(101, 1, ipv4="10.0.0.50")], [known(7, 120, 2, ipv4="10.0.0.50")])
    assert not plan.adopt and "leased in the database to blockhost-002" in plan.skipped[0].reason


def test_an_ipv6_leased_to_another_record_is_never_handed_twice() -> None:
    record = KnownVm(id=7, vmid=120, name="blockhost-002", subscription_id=2, state="running",
                     ipv4="10.0.0.99", ipv6="fd00::5")
    plan = plan_vms([seen(101, 1, ipv6="fd00::5")], [record])
    assert not plan.adopt and "leased" in plan.skipped[0].reason


def test_a_subscription_recorded_at_another_vmid_is_left_to_the_reconciler() -> None:
    plan = plan_vms([seen(101, 1)], [known(7, 105, 1, state="reserved")])
    assert not plan.adopt and "the reconciler settles it" in plan.skipped[0].reason


def test_two_vms_of_one_subscription_adopt_only_the_first() -> None:
    plan = plan_vms([seen(102, 1, name="blockhost-001b"), seen(101, 1)], [])
    assert [a.vm.vmid for a in plan.adopt] == [101]
    assert "recorded first" in plan.skipped[0].reason


def test_a_built_record_with_no_vm_is_reported_never_released() -> None:
    records = [known(7, 101, 1, state="running"), known(8, 102, 2, state="reserved"),
               known(9, 103, 3, state="stopped")]
    plan = plan_vms([], records)
    assert [m.id for m in plan.missing] == [7, 9]
    assert plan.changes == 0


def test_the_plan_does_not_depend_on_the_order_proxmox_lists_in() -> None:
    vms = [seen(101, 1), seen(102, 2), seen(103, 3, ipv4="10.0.0.9")]
    records = [known(7, 120, 9, ipv4="10.0.0.9")]
    plans = {tuple((a.vm.vmid, a.state) for a in plan_vms(order, records).adopt)
             for order in itertools.permutations(vms)}
    assert plans == {((101, "running"), (102, "running"))}


@pytest.mark.parametrize("value,expected", [
    ("ip=10.0.0.5/24,gw=10.0.0.1", ("10.0.0.5", None)),
    ("ip=10.0.0.5/24,gw=10.0.0.1,ip6=fd00::5/64,gw6=fd00::1", ("10.0.0.5", "fd00::5")),
    ("ip6=fd00::5/64", (None, "fd00::5")),
    ("ip=dhcp", (None, None)),
    ("ip=dhcp,ip6=auto", (None, None)),
    ("ip=not-an-address/24", (None, None)),
    ("ip=fd00::5/64", (None, None)),
    ("", (None, None)),
    (None, (None, None)),
])
def test_ipconfig_addresses(value: str | None, expected: tuple[str | None, str | None]) -> None:
    assert parse_ipconfig(value) == expected


def test_the_journal_catches_up_only_for_an_unknown_subscription() -> None:
    assert needs_journal([1, 2], [1, 2, 3]) is False
    assert needs_journal([1, 4], [1, 2, 3]) is True
    assert needs_journal([], []) is False


def test_lookups_are_subscriptions_with_a_vm_and_no_token() -> None:
    tokens = {1: None, 2: 5, 3: None, 4: None}
    live = {1: 10, 2: 11, 4: 13}
    assert lookups(tokens, live) == [Lookup(1, 10), Lookup(4, 13)]


def test_the_signer_note_says_when_the_chain_knows_more() -> None:
    assert "2 transaction(s) of the signer the database does not know" in \
        signer_note(7, 4, 0)
    assert "agrees" in signer_note(5, 4, 1)
    assert "agrees" in signer_note(0, None, 0)
    assert "does not know" in signer_note(3, None, 0)
