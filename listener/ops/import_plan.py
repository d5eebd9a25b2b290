"""Pure decisions of ``blockhost import-reference``: which reference VM is which subscription.

A reference VM is adopted only when every side agrees: Proxmox has a VM at its VMID with its
name, the name ``<prefix><id>`` names a subscription on chain whose subscriber is the VM's
wallet, its NFT (when the reference recorded one) belongs to that wallet, and nothing of ours
holds its VMID, addresses or token yet. Otherwise it is reported with the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from listener.ops.reference_vms import ReferenceVm

#: The reference's VM states that still have a VM to serve.
LIVE = frozenset({"active", "suspended"})


@dataclass(frozen=True)
class ProxmoxSide:
    """What Proxmox shows at the reference VM's VMID."""

    name: str
    node: str
    power: str


@dataclass(frozen=True)
class ChainSide:
    """The subscription the VM's name points at, as the contract holds it."""

    subscriber: str
    expires_at: int
    cancelled: bool


@dataclass(frozen=True)
class Ours:
    """What our database already holds."""

    vmids: frozenset[int]
    addresses: frozenset[str]
    names: frozenset[str]
    subscriptions: frozenset[int]
    tokens: frozenset[int]


@dataclass(frozen=True)
class Verdict:
    """Adopt (``reason`` None) or leave alone (the reason)."""

    vm: ReferenceVm
    subscription_id: int | None
    reason: str | None = None
    #: the NFT the reference recorded, checked on chain (None: looked up by publicSecret)
    token_id: int | None = None
    #: the subscriber (the reference's wallet, or the chain's when the record has none)
    wallet: str | None = None


def subscription_of(name: str, prefix: str) -> int | None:
    """The subscription id a reference VM name carries (``blockhost-007`` → 7)."""
    match = re.fullmatch(re.escape(prefix) + r"(\d{1,18})", name)
    return int(match.group(1)) if match else None


def judge(vm: ReferenceVm, *, prefix: str, pve: ProxmoxSide | None, chain: ChainSide | None,
          token_owner: str | None, ours: Ours) -> Verdict:
    """Adopt ``vm`` or say why not (first reason that applies)."""
    sub = subscription_of(vm.name, prefix)

    def no(reason: str) -> Verdict:
        return Verdict(vm, sub, reason)

    if vm.status not in LIVE:
        return no(f"its status is {vm.status}: nothing to serve")
    if sub is None:
        return no(f"its name is not {prefix}<subscription id>, so no subscription is named")
    if pve is None:
        return no(f"Proxmox has no VM at VMID {vm.vmid}")
    if pve.name != vm.name:
        return no(f"the VM at VMID {vm.vmid} is named {pve.name!r}, not {vm.name!r}")
    held = _already_ours(vm, sub, ours)
    if held is not None:
        return no(held)
    if chain is None:
        return no(f"subscription {sub} does not exist on chain.subscription_contract")
    if vm.wallet is not None and chain.subscriber.lower() != vm.wallet.lower():
        return no(f"subscription {sub} belongs to {chain.subscriber}, not to the VM's wallet "
                  f"{vm.wallet}")
    if vm.token_id is not None:
        if vm.token_id in ours.tokens:
            return no(f"NFT #{vm.token_id} is already recorded for another VM")
        if token_owner is None or token_owner.lower() != chain.subscriber.lower():
            return no(f"NFT #{vm.token_id} is not owned by the subscriber on chain "
                      f"({token_owner or 'no such token'})")
    return Verdict(vm, sub, None, vm.token_id, chain.subscriber)


def _already_ours(vm: ReferenceVm, sub: int, ours: Ours) -> str | None:
    if vm.vmid in ours.vmids or vm.name in ours.names:
        return f"{vm.name} (VMID {vm.vmid}) is already in our inventory (imported before?)"
    if vm.ipv4 in ours.addresses or (vm.ipv6 is not None and vm.ipv6 in ours.addresses):
        return "its address is already leased in our inventory"
    if sub in ours.subscriptions:
        return f"subscription {sub} already has a VM in our inventory"
    return None
