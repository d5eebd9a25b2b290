"""Read what the reconciler and the operator commands decide from: chain facts, our
inventory, and Proxmox's view of a VM we built.

Shared by the daemon's reconciler, ``gc``, ``status`` and ``vm`` commands, so every caller judges
a subscription the same way.
"""

from __future__ import annotations

from listener.chain.journal import Subscription
from listener.config import Config
from listener.reconcile.decide import (
    Facts,
    Observed,
    SubscriptionState,
    desired_state,
    display_state,
)
from listener.reconcile.progress import Progress
from provisioner.backend import Marker, VMBackend, VMRef, parse_marker
from provisioner.inventory import Inventory, VMRecord
from provisioner.network_hooks import VMFacts

#: After this many consecutive failures a subscription shows as ``failed`` (still retried).
FAILED_AFTER_ATTEMPTS = 5
#: Inventory states that exist on Proxmox (so Proxmox's own view is worth reading).
BUILT_STATES = frozenset({"created", "running", "stopped"})


def vm_name(config: Config, subscription_id: int) -> str:
    return f"{config.vm.name_prefix}{subscription_id:03d}"


def facts_of(sub: Subscription) -> Facts:
    return Facts(expires_at=sub.expires_at, cancelled=sub.cancelled, cancelled_at=sub.cancelled_at)


def observe(sub: Subscription, progress: Progress, inventory: Inventory,
            backend: VMBackend | None = None) -> tuple[Observed, VMRecord | None]:
    """Our progress on ``sub``; with a ``backend``, also Proxmox's view of a built VM."""
    record = inventory.live_for_subscription(sub.id)
    stale = (progress.credentials_vm is not None and record is not None
             and progress.credentials_vm != record.id)
    actual = (actual_state(backend, record)
              if backend is not None and record is not None and record.state in BUILT_STATES
              else None)
    return Observed(vm_state=record.state if record else None, token_id=progress.token_id,
                    nft_expires_at=progress.nft_expires_at, credentials_stale=stale,
                    actual=actual), record


def actual_state(backend: VMBackend, record: VMRecord) -> str:
    """Proxmox's view of our VM: its power state; "missing" when no VM is at its VMID or the
    one there is another instance of ours (a rebuild not yet recorded: the backend adopts or
    refuses it); "foreign" when the VM there no longer carries our marker (edited behind our
    back, or another deployment's with the same default name): it is never touched, and
    never cloned over on the same addresses."""
    status = backend.status(ref_of(record))
    if status is None:
        return "missing"
    marker = parse_marker(status.description)
    if marker is None or marker.subscription_id != record.subscription_id \
            or marker.name != record.name or _other_deployment(marker, backend):
        return "foreign"
    if record.smbios_uuid and status.smbios_uuid and status.smbios_uuid != record.smbios_uuid:
        return "missing"
    return status.power


def _other_deployment(marker: Marker, backend: VMBackend) -> bool:
    """The marker names a deployment id that is not ours (no id: made before ids, ours)."""
    return marker.deployment is not None and marker.deployment != backend.deployment


def subscription_state(sub: Subscription, progress: Progress, inventory: Inventory,
                       chain_time: int, grace_seconds: int) -> SubscriptionState:
    observed, _ = observe(sub, progress, inventory)
    failed = progress.attempts >= FAILED_AFTER_ATTEMPTS and bool(progress.last_error)
    return display_state(desired_state(facts_of(sub), chain_time, grace_seconds), observed, failed)


def ref_of(record: VMRecord) -> VMRef:
    """How the backend finds and proves the record's VM (``subscription_id`` None: manual)."""
    return VMRef(vmid=record.vmid, node=record.node, name=record.name,
                 subscription_id=record.subscription_id, smbios_uuid=record.smbios_uuid)


def vm_facts(config: Config, record: VMRecord) -> VMFacts:
    return VMFacts(name=record.name, vmid=record.vmid, node=record.node,
                   bridge=config.network.bridge, ipv4=record.ipv4, ipv6=record.ipv6,
                   subscription_id=record.subscription_id)
