"""Pure decisions: desired state and the next step for one subscription.

No I/O here. Inputs are chain facts, chain time (the timestamp of the newest confirmed
block, so a replay reaches the same verdicts), the grace period and what we observe of our
own progress. The executor asks :func:`next_action` repeatedly and applies one step at a
time, so a crash between steps simply resumes at the next call.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Desired(enum.Enum):
    RUNNING = "running"
    STOPPED = "stopped"
    DESTROYED = "destroyed"


class Action(enum.Enum):
    ALLOCATE = "allocate"      # reserve VMID / IP / node in the inventory
    MINT = "mint"              # decrypt + verify, encrypt details, mint (token id from receipt)
    CREATE_VM = "create_vm"    # clone + configure (cloud-init nft=<id>) + start
    START = "start"
    STOP = "stop"
    DESTROY = "destroy"        # destroy on Proxmox (if it exists) and release the leases
    UPDATE_EXPIRY = "update_expiry"            # NFT updateExpiration after a renewal
    UPDATE_CREDENTIALS = "update_credentials"  # NFT updateUserEncrypted for a rebuilt VM


@dataclass(frozen=True)
class Facts:
    """What the chain says about a subscription."""

    expires_at: int
    cancelled: bool
    cancelled_at: int | None = None


@dataclass(frozen=True)
class Observed:
    """Our own progress (inventory, NFT) and, when known, what Proxmox actually shows."""

    vm_state: str | None  # inventory: None | "reserved" | "created" | "running" | "stopped"
    token_id: int | None
    #: expiresAt last written to the NFT (None: unknown, never "fixed" blindly)
    nft_expires_at: int | None = None
    #: the NFT's encrypted connection details describe a VM that no longer exists
    credentials_stale: bool = False
    #: Proxmox's view: None = not looked, "missing", "running", "stopped"
    actual: str | None = None


def grace_anchor(facts: Facts) -> int:
    """Grace counts from expiresAt, or from the cancellation's block time if earlier."""
    if facts.cancelled and facts.cancelled_at is not None:
        return min(facts.expires_at, facts.cancelled_at)
    return facts.expires_at


def desired_state(facts: Facts, chain_time: int, grace_seconds: int) -> Desired:
    """SPEC §5: running before expiry, stopped during grace, destroyed after it."""
    anchor = grace_anchor(facts)
    if not facts.cancelled and chain_time < facts.expires_at:
        return Desired.RUNNING
    if chain_time < anchor + grace_seconds:
        return Desired.STOPPED
    return Desired.DESTROYED


def next_action(facts: Facts, chain_time: int, grace_seconds: int, observed: Observed) -> Action | None:
    """The one step that moves observed state toward the desired state, or None if converged.

    Service first (the VM), then the NFT's bookkeeping. A VM deleted or stopped behind our
    back is rebuilt or restarted while the subscription is paid; a VM missing during grace
    is left alone until grace ends, when DESTROY releases its ids."""
    desired = desired_state(facts, chain_time, grace_seconds)
    vm = observed.vm_state
    actual = observed.actual
    if desired is Desired.RUNNING:
        if vm is None:
            return Action.ALLOCATE
        if vm == "reserved":
            if observed.token_id is None:
                return Action.MINT
            if observed.credentials_stale:
                return Action.UPDATE_CREDENTIALS
            return Action.CREATE_VM
        if actual == "missing":
            return Action.CREATE_VM
        if vm in {"created", "stopped"} or actual == "stopped":
            return Action.START
        if observed.credentials_stale and observed.token_id is not None:
            return Action.UPDATE_CREDENTIALS
        if observed.nft_expires_at is not None and observed.nft_expires_at < facts.expires_at:
            return Action.UPDATE_EXPIRY
        return None
    if desired is Desired.STOPPED:
        if vm == "reserved":
            # Expired before the VM was ever built: nothing to keep, give the ids back.
            return Action.DESTROY
        if actual == "missing":
            return None
        if vm in {"created", "running"} or (vm == "stopped" and actual == "running"):
            return Action.STOP
        return None
    if vm is not None:
        return Action.DESTROY
    return None


class SubscriptionState(enum.StrEnum):
    """Where a subscription stands, as ``blockhost status`` shows it."""

    PENDING = "pending"
    PROVISIONING = "provisioning"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    DESTROYED = "destroyed"
    FAILED = "failed"


def display_state(desired: Desired, observed: Observed, failed: bool) -> SubscriptionState:
    """The state shown by ``blockhost status``."""
    state = SubscriptionState
    if failed:
        return state.FAILED
    vm = observed.vm_state
    if desired is Desired.RUNNING:
        if vm == "running" and observed.actual in {None, "running"}:
            return state.ACTIVE
        return state.PENDING if vm is None else state.PROVISIONING
    if desired is Desired.STOPPED:
        return state.SUSPENDED if vm in {None, "stopped"} else state.PROVISIONING
    return state.DESTROYED if vm is None else state.PROVISIONING
