"""Pure decisions of ``blockhost recover``: what the database must learn from Proxmox.

The database is the daemon's memory; Proxmox (our markers) and the chain (our mints) are the
truth it is rebuilt from after a restore or a loss. Nothing here does I/O: the op
(:mod:`listener.reconcile.recovery`) reads both sides, asks :func:`plan_vms`, and applies the plan.
The rule throughout: adopt what is provably ours, release nothing, and when two records claim
one thing, touch neither and say why.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

#: Inventory states that mean a VM was built on Proxmox.
BUILT = frozenset({"created", "running", "stopped"})


@dataclass(frozen=True)
class SeenVm:
    """One VM Proxmox shows with our markers."""

    vmid: int
    node: str
    name: str
    subscription_id: int | None  # None: made by hand (``vm create``)
    power: str
    ipv4: str | None
    ipv6: str | None
    smbios_uuid: str | None = None


@dataclass(frozen=True)
class KnownVm:
    """One live inventory record."""

    id: int
    vmid: int
    name: str
    subscription_id: int | None
    state: str
    ipv4: str | None
    ipv6: str | None


@dataclass(frozen=True)
class Adopt:
    """Record a VM the database forgot, with its VMID and addresses leased."""

    vm: SeenVm
    state: str


@dataclass(frozen=True)
class MarkBuilt:
    """A reserved record whose VM was built after the database's copy was taken."""

    record_id: int
    vm: SeenVm
    state: str


@dataclass(frozen=True)
class Skip:
    """A VM of ours left alone, and why."""

    vmid: int
    name: str
    reason: str


@dataclass
class VmPlan:
    adopt: list[Adopt] = field(default_factory=list)
    mark_built: list[MarkBuilt] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    #: built records with no VM on Proxmox: the reconciler rebuilds or releases them
    missing: list[KnownVm] = field(default_factory=list)

    @property
    def changes(self) -> int:
        return len(self.adopt) + len(self.mark_built)


def inventory_state(power: str) -> str:
    """The inventory state of an adopted VM: ``running`` only if it runs (the reconciler then
    starts or stops it as the chain's expiry says)."""
    return "running" if power == "running" else "stopped"


def parse_ipconfig(value: str | None) -> tuple[str | None, str | None]:
    """(IPv4, IPv6) addresses of an ``ipconfig0`` value (``ip=10.0.0.5/24,gw=…,ip6=…``);
    ``dhcp``/``auto`` and malformed parts give None."""
    v4: str | None = None
    v6: str | None = None
    for part in (value or "").split(","):
        key, _, raw = part.strip().partition("=")
        try:
            address = str(ipaddress.ip_interface(raw).ip)
        except ValueError:
            continue
        if key == "ip" and ":" not in address:
            v4 = address
        elif key == "ip6" and ":" in address:
            v6 = address
    return v4, v6


def plan_vms(seen: Iterable[SeenVm], known: Iterable[KnownVm]) -> VmPlan:
    """Compare Proxmox's VMs of ours with the live inventory records."""
    records = list(known)
    plan = VmPlan()
    by_vmid = {r.vmid: r for r in records}
    claimed_subs: set[int] = set()
    seen_vmids: set[int] = set()
    for vm in sorted(seen, key=lambda v: v.vmid):
        seen_vmids.add(vm.vmid)
        record = by_vmid.get(vm.vmid)
        if record is not None:
            _matched(plan, vm, record)
            continue
        reason = _why_not_adopt(vm, records, claimed_subs)
        if reason is not None:
            plan.skipped.append(Skip(vm.vmid, vm.name, reason))
            continue
        if vm.subscription_id is not None:
            claimed_subs.add(vm.subscription_id)
        plan.adopt.append(Adopt(vm, inventory_state(vm.power)))
    plan.missing = [r for r in records if r.state in BUILT and r.vmid not in seen_vmids]
    return plan


def _matched(plan: VmPlan, vm: SeenVm, record: KnownVm) -> None:
    """A VM at a VMID the database holds: the same VM (maybe built since), or a conflict."""
    if record.name != vm.name or record.subscription_id != vm.subscription_id:
        plan.skipped.append(Skip(vm.vmid, vm.name,
                                 f"its VMID is held in the database by {record.name}; "
                                 "check which is right, then `blockhost vm list`"))
    elif record.state == "reserved":
        plan.mark_built.append(MarkBuilt(record.id, vm, inventory_state(vm.power)))


def _why_not_adopt(vm: SeenVm, records: list[KnownVm], claimed_subs: set[int]) -> str | None:
    """Why a VM the database does not know cannot be recorded (None: it can)."""
    if vm.subscription_id is None:
        return ("made by hand (`vm create`): its request and expiry are not on chain, so "
                "it is not recorded; `blockhost vm destroy` it or leave it")
    if vm.ipv4 is None:
        return "its ipconfig0 names no IPv4 address, so its lease cannot be recorded"
    sub = vm.subscription_id
    if sub in claimed_subs:
        return f"another VM of subscription {sub} was recorded first"
    for record in records:
        if record.name == vm.name or record.subscription_id == sub:
            return (f"the database has {record.name} at VMID {record.vmid} for subscription "
                    f"{sub}; the reconciler settles it, this one is left alone")
        if vm.ipv4 == record.ipv4 or (vm.ipv6 is not None and vm.ipv6 == record.ipv6):
            return (f"its address is leased in the database to {record.name} (VMID "
                    f"{record.vmid}); fix the address by hand, then re-run `blockhost recover`")
    return None


def needs_journal(adopted: Iterable[int], journaled: Iterable[int]) -> bool:
    """Must the journal catch up (up to the confirmed head) before the adopted VMs' tokens can
    be found? Yes when one serves a subscription the journal does not know yet."""
    return bool(set(adopted) - set(journaled))


@dataclass(frozen=True)
class Lookup:
    """A subscription whose NFT the database does not know, and the VM it serves."""

    subscription_id: int
    record_id: int


def lookups(tokens: dict[int, int | None], live: dict[int, int]) -> list[Lookup]:
    """Subscriptions with a live VM record but no token recorded (``tokens``: subscription →
    token id; ``live``: subscription → live record id)."""
    return [Lookup(sub, live[sub]) for sub, token in sorted(tokens.items())
            if token is None and sub in live]


def signer_note(chain_nonce: int, stored_max: int | None, open_count: int) -> str:
    """One line on the signer: does the database know every transaction it sent?"""
    stored_next = 0 if stored_max is None else stored_max + 1
    if chain_nonce > stored_next:
        return (f"the chain has {chain_nonce - stored_next} transaction(s) of the signer the "
                f"database does not know (nonce {chain_nonce}, database up to {stored_next - 1});"
                " new ones start at the chain's nonce, and their effects are read from the chain")
    return (f"the signer's nonce {chain_nonce} agrees with the database; {open_count} stored "
            "transaction(s) still open (re-sent by the listener)")
