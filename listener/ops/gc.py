"""``blockhost gc``: the daemon's expiry decisions, shown (dry run) or applied by hand.

The verdicts come from the same pure function the daemon uses (:func:`listener.reconcile.decide.next_action`)
with chain time from confirmed blocks, so a by-hand run never disagrees with the daemon except
where the operator overrides the grace period. Only STOP (suspend) and DESTROY are GC steps;
nothing here creates, starts or mints.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import asdict, dataclass

from listener.reconcile.decide import Action, grace_anchor, next_action
from listener.reconcile.reconciler import facts_of, observe
from listener.chain.journal import Store
from provisioner.inventory import Inventory


class GcMode(enum.Enum):
    ALL = "all"
    SUSPEND_ONLY = "suspend-only"
    DESTROY_ONLY = "destroy-only"


GC_ACTIONS = {GcMode.ALL: {Action.STOP, Action.DESTROY},
              GcMode.SUSPEND_ONLY: {Action.STOP}, GcMode.DESTROY_ONLY: {Action.DESTROY}}


@dataclass(frozen=True)
class Verdict:
    """One GC step for one VM: a subscription's, or (``subscription_id`` None) one made by
    hand with `vm create`, whose expiry is the wall clock set by ``--expiry-days``."""

    subscription_id: int | None
    action: str
    vm_name: str
    vmid: int
    node: str
    expires_at: int
    grace_ends_at: int
    result: str = "planned"  # planned | done | failed: <reason>

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def plan(store: Store, inventory: Inventory, *, chain_time: int, grace_seconds: int,
         mode: GcMode = GcMode.ALL) -> list[Verdict]:
    """Pure over the store's contents: the GC steps due at ``chain_time``."""
    wanted = GC_ACTIONS[mode]
    verdicts = []
    for sub in store.subscriptions():
        observed, record = observe(sub, inventory)
        if record is None:
            continue
        facts = facts_of(sub)
        action = next_action(facts, chain_time, grace_seconds, observed)
        if action not in wanted:
            continue
        verdicts.append(Verdict(
            subscription_id=sub.id, action=action.value, vm_name=record.name, vmid=record.vmid,
            node=record.node, expires_at=sub.expires_at,
            grace_ends_at=grace_anchor(facts) + grace_seconds))
    return verdicts


def manual_action(expires_at: int, now: int, grace_seconds: int, vm_state: str) -> Action | None:
    """The GC step due for a VM made by hand: stop once expired, destroy once the grace
    period is over too; nothing for a VM still being built (``reserved``)."""
    if vm_state in ("reserved", "destroyed") or now < expires_at:
        return None
    if now >= expires_at + grace_seconds:
        return Action.DESTROY
    return Action.STOP if vm_state != "stopped" else None


def plan_manual(inventory: Inventory, *, now: int, grace_seconds: int,
                mode: GcMode = GcMode.ALL) -> list[Verdict]:
    """The GC steps due at wall-clock ``now`` for the VMs made by `vm create`."""
    wanted = GC_ACTIONS[mode]
    verdicts = []
    for record in inventory.list():
        if record.subscription_id is not None:
            continue
        manual = inventory.manual(record.id)
        if manual is None:
            continue
        action = manual_action(manual.expires_at, now, grace_seconds, record.state)
        if action is None or action not in wanted:
            continue
        verdicts.append(Verdict(
            subscription_id=None, action=action.value, vm_name=record.name, vmid=record.vmid,
            node=record.node, expires_at=manual.expires_at,
            grace_ends_at=manual.expires_at + grace_seconds))
    return verdicts


def execute(verdicts: list[Verdict], apply: Callable[[int, Action], None],
            apply_manual: Callable[[str, Action], None] | None = None) -> list[Verdict]:
    """Apply each verdict through ``apply`` (the reconciler's journaled step) or, for a VM
    made by hand, ``apply_manual``; a failure is recorded and the next verdict still runs."""
    done = []
    for verdict in verdicts:
        try:
            if verdict.subscription_id is None:
                if apply_manual is None:
                    raise RuntimeError("no way to apply a manual VM's step")
                apply_manual(verdict.vm_name, Action(verdict.action))
            else:
                apply(verdict.subscription_id, Action(verdict.action))
        except Exception as exc:  # noqa: BLE001 - reported per VM; exit code says it failed
            done.append(_with(verdict, f"failed: {exc}"[:300]))
        else:
            done.append(_with(verdict, "done"))
    return done


def _with(verdict: Verdict, result: str) -> Verdict:
    return Verdict(**{**asdict(verdict), "result": result})


def render(verdicts: list[Verdict], *, execute_mode: bool) -> str:
    if not verdicts:
        return "nothing to collect"
    verb = {"stop": "suspend", "destroy": "destroy"}
    lines = []
    for v in verdicts:
        prefix = "" if execute_mode else "would "
        owner = ("made by hand" if v.subscription_id is None
                 else f"subscription #{v.subscription_id}")
        lines.append(f"{prefix}{verb[v.action]} {v.vm_name} (vmid {v.vmid} on {v.node}, "
                     f"{owner}, expired at {v.expires_at}, grace ends "
                     f"{v.grace_ends_at})" + ("" if v.result == "planned" else f": {v.result}"))
    return "\n".join(lines)
