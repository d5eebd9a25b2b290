"""``blockhost gc``: the daemon's expiry decisions, shown (dry run) or applied by hand.

The verdicts come from the same pure function the daemon uses
(:func:`listener.reconcile.decide.next_action`) with chain time from confirmed blocks, so a
by-hand run never disagrees with the daemon except where the operator overrides the grace
period. Only STOP (suspend) and DESTROY are GC steps; nothing here creates, starts or mints.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import asdict, dataclass, replace

from listener.chain.journal import Store
from listener.config import Config
from listener.errors import UserError
from listener.ops.database import open_database
from listener.ops.vm_admin import destroy_vm, stop_vm
from listener.reconcile.decide import Action, grace_anchor, next_action
from listener.reconcile.observe import facts_of, observe
from listener.reconcile.progress import Progress, ProgressStore
from listener.reconcile.reconciler import Reconciler
from listener.runtime.wiring import build_services
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


@dataclass(frozen=True)
class GcReport:
    """One run: the chain time and grace period it judged by, and every step with its result."""

    chain_time: int | None
    grace_seconds: int
    execute: bool
    mode: GcMode
    verdicts: list[Verdict]

    @property
    def failed(self) -> bool:
        return any(v.result.startswith("failed") for v in self.verdicts)

    def to_json(self) -> dict[str, object]:
        return {"chain_time": self.chain_time, "grace_seconds": self.grace_seconds,
                "execute": self.execute, "mode": self.mode.value,
                "steps": [v.to_json() for v in self.verdicts]}


def run_gc(config: Config, *, mode: GcMode, grace_days: float | None,
           execute: bool) -> GcReport:
    """Judge every VM and, with ``execute``, apply the due steps; ``grace_days`` overrides
    ``gc.grace_days`` for this run."""
    grace = _grace_seconds(config, grace_days)
    chain_time, verdicts = _judge(config, grace_seconds=grace, mode=mode)
    if execute and verdicts:
        verdicts = _apply(config, verdicts)
    return GcReport(chain_time, grace, execute, mode, verdicts)


def _grace_seconds(config: Config, grace_days: float | None) -> int:
    if grace_days is None:
        return config.grace_seconds
    if grace_days < 0:
        raise UserError("--grace-days must be >= 0")
    return int(grace_days * 86400)


def _judge(config: Config, *, grace_seconds: int,
           mode: GcMode) -> tuple[int | None, list[Verdict]]:
    """The due steps and the chain time they were judged by."""
    with closing(open_database(config)) as store:
        inventory = Inventory(store.conn)
        chain_time = store.chain_state().chain_time
        if chain_time is None and store.subscriptions():
            raise UserError("no confirmed block yet, so no chain time to judge expiry by; let "
                            "`blockhost listen` run first")
        verdicts = [] if chain_time is None else plan(
            store, inventory, chain_time=chain_time, grace_seconds=grace_seconds, mode=mode)
        # VMs made by `vm create` have no chain facts: their expiry is wall-clock time
        verdicts += plan_manual(inventory, now=int(time.time()), grace_seconds=grace_seconds,
                                mode=mode)
    return chain_time, verdicts


def _apply(config: Config, verdicts: list[Verdict]) -> list[Verdict]:
    """Apply through the daemon's journaled steps; a VM made by hand is stopped or destroyed
    with the same ownership checks as `vm destroy`."""
    services = build_services(config, with_chain=False)
    try:
        reconciler = Reconciler(services, choose_node=lambda _size: "")

        def apply_manual(name: str, action: Action) -> None:
            if action is Action.DESTROY:
                destroy_vm(services.store, services.inventory, services.backend, name,
                           config=config)
            else:
                stop_vm(services.inventory, services.backend, name)

        return execute(verdicts, reconciler.apply_one, apply_manual)
    finally:
        services.store.close()


def plan(store: Store, inventory: Inventory, *, chain_time: int, grace_seconds: int,
         mode: GcMode = GcMode.ALL) -> list[Verdict]:
    """Pure over the store's contents: the GC steps due at ``chain_time``."""
    wanted = GC_ACTIONS[mode]
    progress_of = ProgressStore(store.conn).all()
    verdicts = []
    for sub in store.subscriptions():
        observed, record = observe(sub, progress_of.get(sub.id, Progress()), inventory)
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
    return replace(verdict, result=result)
