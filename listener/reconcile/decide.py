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


class Scope(enum.Enum):
    """Which steps may be taken now, whatever the facts ask for."""

    #: the normal case: every step
    ALL = "all"
    #: catching up with the chain: effects come from the present, so nothing is created,
    #: minted or written to the NFT from old facts; what exists may still stop or be destroyed
    CATCHING_UP = "catching_up"
    #: dead-lettered: only stopping and destroying (through the usual ownership checks), so an
    #: open dead letter never keeps an expired tenant running
    TEARDOWN_ONLY = "teardown_only"


#: Steps that create service or write to the chain: withheld while catching up.
NEW_SERVICE = frozenset({Action.ALLOCATE, Action.MINT, Action.CREATE_VM,
                         Action.UPDATE_EXPIRY, Action.UPDATE_CREDENTIALS})
#: Steps that take service away: the only ones a dead letter allows.
TEARDOWN = frozenset({Action.STOP, Action.DESTROY})


def paid_unserved_seconds(facts: Facts, purchased_at: int | None, chain_time: int,
                          grace_seconds: int, *, served: bool) -> int | None:
    """For a subscription that was over (expired or cancelled) before it was ever served: the
    seconds it paid for, so an operator can refund. None while it can still be served, once it
    was served, or when the purchase time is unknown."""
    if served or purchased_at is None:
        return None
    if desired_state(facts, chain_time, grace_seconds) is Desired.RUNNING:
        return None
    return max(0, facts.expires_at - purchased_at)


def chain_scope(confirmed_head: int | None, applied_block: int | None,
                catch_up_blocks: int) -> Scope:
    """ALL once the applied cursor is within ``catch_up_blocks`` of the confirmed head,
    CATCHING_UP before (effects come from the present, not from replayed history)."""
    if confirmed_head is None or applied_block is None:
        return Scope.CATCHING_UP
    return Scope.CATCHING_UP if confirmed_head - applied_block > catch_up_blocks else Scope.ALL


def permitted(action: Action, scope: Scope) -> bool:
    """May ``action`` be taken in ``scope``?"""
    if scope is Scope.TEARDOWN_ONLY:
        return action in TEARDOWN
    if scope is Scope.CATCHING_UP:
        return action not in NEW_SERVICE
    return True


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
    #: Proxmox's view: None = not looked, "missing" (no VM at our VMID), "foreign" (a VM at
    #: our VMID whose ownership markers are not ours: never touched, never cloned over),
    #: "running", "stopped"
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


def next_action(facts: Facts, chain_time: int, grace_seconds: int, observed: Observed,
                scope: Scope = Scope.ALL) -> Action | None:
    """The one step that moves observed state toward the desired state, or None if converged
    (or if that step is not permitted in ``scope``).

    Service first (the VM), then the NFT's bookkeeping. A VM deleted or stopped behind our
    back is rebuilt or restarted while the subscription is paid; a VM missing during grace
    is left alone until grace ends, when DESTROY releases its ids. A VM whose markers are no
    longer ours is never touched and never cloned over (the reconciler dead-letters it)."""
    if observed.actual == "foreign":
        return None
    action = _wanted_action(facts, chain_time, grace_seconds, observed)
    return action if action is not None and permitted(action, scope) else None


def _wanted_action(facts: Facts, chain_time: int, grace_seconds: int,
                   observed: Observed) -> Action | None:
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
