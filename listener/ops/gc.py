"""``blockhost gc``: the daemon's expiry decisions, shown (dry run) or applied by hand.

The verdicts come from the same pure function the daemon uses
(:func:`listener.reconcile.decide.next_action`), so a by-hand run never disagrees with the
daemon except where the operator overrides the grace period. The chain time is the confirmed
head's, read from the RPC, so the daily timer still suspends on time while the listener is
down (:mod:`listener.ops.chain_view`); each step is judged again right before it is taken
(:mod:`listener.ops.gc_recheck`). Only STOP (suspend) and DESTROY are GC steps; nothing here
creates, starts or mints.
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
from listener.ops.chain_view import ChainTime, ChainView, read_chain_time
from listener.ops.database import open_database
from listener.ops.gc_recheck import SubscriptionRecheck, still_due
from listener.ops.vm_admin import destroy_vm, stop_vm
from listener.reconcile.decide import Action, grace_anchor, next_action
from listener.reconcile.observe import facts_of, observe
from listener.reconcile.progress import Progress, ProgressStore
from listener.reconcile.reconciler import Reconciler, Services
from listener.runtime.instance_lock import Holder, unless_listening
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
    result: str = "planned"  # planned | done | skipped: <reason> | failed: <reason>

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class GcReport:
    """One run: the chain time and grace period it judged by, and every step with its result."""

    time: ChainTime
    grace_seconds: int
    execute: bool
    mode: GcMode
    verdicts: list[Verdict]

    @property
    def chain_time(self) -> int | None:
        return self.time.value

    @property
    def failed(self) -> bool:
        return any(v.result.startswith("failed") for v in self.verdicts)

    def to_json(self) -> dict[str, object]:
        return {"chain_time": self.chain_time, "chain_time_source": self.time.source,
                "confirmed_block": self.time.confirmed_block, "rpc_error": self.time.rpc_error,
                "grace_seconds": self.grace_seconds, "execute": self.execute,
                "mode": self.mode.value, "steps": [v.to_json() for v in self.verdicts]}


def run_gc(config: Config, *, mode: GcMode, grace_days: float | None,
           execute: bool) -> GcReport:
    """Judge every VM and, with ``execute``, apply the due steps; ``grace_days`` overrides
    ``gc.grace_days`` for this run."""
    report = plan_gc(config, mode=mode, grace_days=grace_days)
    return execute_gc(config, report) if execute else report


def plan_gc(config: Config, *, mode: GcMode, grace_days: float | None) -> GcReport:
    """The due steps, each already checked as :func:`execute_gc` will check it again (a step
    that would be skipped or cannot be checked says so)."""
    grace = _grace_seconds(config, grace_days)
    with closing(open_database(config)) as store:
        state = store.chain_state()
        chain, now = read_chain_time(config, chain_id=state.chain_id, stored=state.chain_time)
        inventory = Inventory(store.conn)
        verdicts = _judge(store, inventory, now, grace_seconds=grace, mode=mode)
        check = _rechecker(store, inventory, chain, now, grace_seconds=grace)
        verdicts = [_with(v, check(v) or "planned") for v in verdicts]
    return GcReport(now, grace, False, mode, verdicts)


def execute_gc(config: Config, report: GcReport) -> GcReport:
    """Take the planned steps of ``report``, each re-judged right before it is taken. While a
    listener runs, only VMs made by hand are collected: it takes the subscriptions' steps."""
    with unless_listening(config.db.path, "gc --execute") as holder:
        if holder is not None:
            report = replace(report, verdicts=[_left_to(holder, v) for v in report.verdicts])
        verdicts = _apply(config, report)
    return replace(report, execute=True, verdicts=verdicts)


def _left_to(holder: Holder, verdict: Verdict) -> Verdict:
    if verdict.subscription_id is None or verdict.result != "planned":
        return verdict
    return _with(verdict, f"skipped: left to the running {holder}")


def _grace_seconds(config: Config, grace_days: float | None) -> int:
    if grace_days is None:
        return config.grace_seconds
    if grace_days < 0:
        raise UserError("--grace-days must be >= 0")
    return int(grace_days * 86400)


def _judge(store: Store, inventory: Inventory, now: ChainTime, *, grace_seconds: int,
           mode: GcMode) -> list[Verdict]:
    """The due steps: subscriptions' by chain time, hand-made VMs' by wall clock."""
    if now.value is None and store.subscriptions():
        raise UserError(f"{now.describe()}, so there is nothing to judge expiry by; fix "
                        "chain.rpc_urls or let `blockhost listen` run first")
    verdicts = [] if now.value is None else plan(
        store, inventory, chain_time=now.value, grace_seconds=grace_seconds, mode=mode)
    # VMs made by `vm create` have no chain facts: their expiry is wall-clock time
    return verdicts + plan_manual(inventory, now=int(time.time()),
                                  grace_seconds=grace_seconds, mode=mode)


def _rechecker(store: Store, inventory: Inventory, chain: ChainView | None, now: ChainTime, *,
               grace_seconds: int) -> Callable[[Verdict], str | None]:
    """The check taken right before each step (None: still due, else the result to record)."""
    subscriptions = SubscriptionRecheck(store, inventory, chain, grace_seconds=grace_seconds,
                                        no_chain_reason=now.rpc_error)

    def check(verdict: Verdict) -> str | None:
        if verdict.subscription_id is None:
            return recheck_manual(inventory, verdict, now=int(time.time()),
                                  grace_seconds=grace_seconds)
        return subscriptions.changed(verdict.subscription_id, verdict.vmid,
                                     Action(verdict.action))

    return check


def recheck_manual(inventory: Inventory, verdict: Verdict, *, now: int,
                   grace_seconds: int) -> str | None:
    """A VM made by hand, judged again from its stored expiry at wall-clock ``now``."""
    record = inventory.get(verdict.vm_name)
    manual = inventory.manual(record.id) if record is not None else None
    if record is None or manual is None or record.vmid != verdict.vmid:
        return "skipped: the VM is gone or was replaced since the plan"
    fresh = manual_action(manual.expires_at, now, grace_seconds, record.state)
    if still_due(Action(verdict.action), fresh):
        return None
    return f"skipped: now due for {fresh.value if fresh is not None else 'nothing'}"


def _apply(config: Config, report: GcReport) -> list[Verdict]:
    """Apply the planned steps through the daemon's journaled steps, each re-judged right
    before it is taken; steps the plan already skipped or could not check keep their result."""
    planned = [v for v in report.verdicts if v.result == "planned"]
    if not planned:
        return report.verdicts
    services = build_services(config, with_chain=False)
    try:
        state = services.store.chain_state()
        chain, now = read_chain_time(config, chain_id=state.chain_id, stored=state.chain_time)
        check = _rechecker(services.store, services.inventory, chain, now,
                           grace_seconds=report.grace_seconds)
        done = iter(execute(planned, *_appliers(config, services), recheck=check))
        return [next(done) if v.result == "planned" else v for v in report.verdicts]
    finally:
        services.store.close()


def _appliers(config: Config, services: Services) -> tuple[
        Callable[[int, Action], None], Callable[[str, Action], None]]:
    """A subscription's step goes through the reconciler (journaled like the daemon's); a VM
    made by hand is stopped or destroyed with the same ownership checks as `vm destroy`."""
    reconciler = Reconciler(services, choose_node=lambda _size: "")

    def apply_manual(name: str, action: Action) -> None:
        if action is Action.DESTROY:
            destroy_vm(services.store, services.inventory, services.backend, name,
                       config=config)
        else:
            stop_vm(services.inventory, services.backend, name)

    return reconciler.apply_one, apply_manual


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
            apply_manual: Callable[[str, Action], None] | None = None, *,
            recheck: Callable[[Verdict], str | None] | None = None) -> list[Verdict]:
    """Apply each verdict through ``apply`` (the reconciler's journaled step) or, for a VM
    made by hand, ``apply_manual``; a failure is recorded and the next verdict still runs.
    ``recheck``, asked right before each step, may skip it (its answer is the result)."""
    done = []
    for verdict in verdicts:
        try:
            changed = recheck(verdict) if recheck is not None else None
            if changed is not None:
                done.append(_with(verdict, changed))
                continue
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
