"""The pure policy of the bad days: which steps a scope permits, when the chain is caught up,
what a never-served subscription paid for, and what each error means (temporary/permanent).
"""

from __future__ import annotations

import itertools

import pytest
import requests
from web3.exceptions import ContractLogicError, TimeExhausted, Web3RPCError

from listener.chain.rpc import RpcError, TransientRpcError
from listener.errors import ConfigError, UserError
from listener.reconcile.decide import (
    NEW_SERVICE,
    TEARDOWN,
    Action,
    Facts,
    Observed,
    Scope,
    chain_scope,
    next_action,
    paid_unserved_seconds,
    permitted,
)
from listener.reconcile.failures import Failure, classify, is_classified
from listener.reconcile.progress import Progress
from listener.reconcile.reconciler import due, wait_delay
from listener.writeback.tx_errors import TxFailed, TxNodeError
from provisioner.cloudinit import TemplateError
from provisioner.errors import (
    AlreadyExists,
    Locked,
    NotFound,
    OwnershipMismatch,
    PermissionDenied,
    PveError,
    TaskFailed,
    Transient,
    VmidTaken,
)
from provisioner.inventory import AllocationError
from provisioner.network_hooks import HookFailed
from provisioner.placement import PlacementError

EXPIRES = 1_000_000
GRACE = 86_400
TIMES = (EXPIRES - 10, EXPIRES, EXPIRES + GRACE - 1, EXPIRES + GRACE, EXPIRES + 10 * GRACE)
FACTS = (Facts(EXPIRES, False), Facts(EXPIRES, True, EXPIRES - 100))
VM_STATES = (None, "reserved", "created", "running", "stopped")
ACTUALS = (None, "missing", "running", "stopped")
OBSERVED = tuple(
    Observed(vm_state=vm, token_id=token, nft_expires_at=nft, credentials_stale=stale,
             actual=actual if vm in {"created", "running", "stopped"} else None)
    for vm, token, nft, stale, actual in itertools.product(
        VM_STATES, (None, 7), (None, EXPIRES - 1, EXPIRES), (False, True), ACTUALS))


def test_every_action_is_in_exactly_the_scopes_the_policy_says() -> None:
    for action in Action:
        assert permitted(action, Scope.ALL)
        assert permitted(action, Scope.CATCHING_UP) is (action not in NEW_SERVICE)
        assert permitted(action, Scope.TEARDOWN_ONLY) is (action in TEARDOWN)
    assert {Action.ALLOCATE, Action.MINT, Action.CREATE_VM} <= NEW_SERVICE
    assert {Action.STOP, Action.DESTROY} == TEARDOWN


@pytest.mark.parametrize("scope", list(Scope))
def test_a_scope_only_ever_withholds_never_invents(scope: Scope) -> None:
    """Exhaustively: the scoped answer is the unscoped one when permitted, else nothing."""
    for facts, at, observed in itertools.product(FACTS, TIMES, OBSERVED):
        wanted = next_action(facts, at, GRACE, observed)
        scoped = next_action(facts, at, GRACE, observed, scope)
        assert scoped == (wanted if wanted is not None and permitted(wanted, scope) else None)


def test_catching_up_creates_and_mints_nothing_but_still_stops_and_destroys() -> None:
    paid, fresh = Facts(EXPIRES, False), Observed(vm_state=None, token_id=None)
    assert next_action(paid, EXPIRES - 10, GRACE, fresh, Scope.CATCHING_UP) is None
    running = Observed(vm_state="running", token_id=7, nft_expires_at=EXPIRES, actual="running")
    assert next_action(paid, EXPIRES, GRACE, running, Scope.CATCHING_UP) is Action.STOP
    stopped = Observed(vm_state="stopped", token_id=7, nft_expires_at=EXPIRES, actual="stopped")
    assert next_action(paid, EXPIRES + GRACE, GRACE, stopped,
                       Scope.CATCHING_UP) is Action.DESTROY


def test_a_vm_whose_marker_is_not_ours_is_never_touched_or_cloned_over() -> None:
    for facts, at, scope in itertools.product(FACTS, TIMES, Scope):
        for vm in ("created", "running", "stopped"):
            foreign = Observed(vm_state=vm, token_id=7, actual="foreign")
            assert next_action(facts, at, GRACE, foreign, scope) is None


@pytest.mark.parametrize(("confirmed", "applied", "expected"), [
    (None, None, Scope.CATCHING_UP),
    (100, None, Scope.CATCHING_UP),
    (100, 100, Scope.ALL),
    (100, 84, Scope.ALL),        # exactly catch_up_blocks behind
    (100, 83, Scope.CATCHING_UP),
    (2_400, 400, Scope.CATCHING_UP),
])
def test_chain_scope(confirmed: int | None, applied: int | None, expected: Scope) -> None:
    assert chain_scope(confirmed, applied, 16) is expected


def test_paid_unserved_seconds_only_for_what_ended_before_it_was_served() -> None:
    bought = EXPIRES - 3 * 86_400
    ended = Facts(EXPIRES, False)
    assert paid_unserved_seconds(ended, bought, EXPIRES, GRACE, served=False) == 3 * 86_400
    assert paid_unserved_seconds(ended, bought, EXPIRES - 1, GRACE, served=False) is None
    assert paid_unserved_seconds(ended, bought, EXPIRES, GRACE, served=True) is None
    assert paid_unserved_seconds(ended, None, EXPIRES, GRACE, served=False) is None
    cancelled = Facts(EXPIRES, True, bought + 10)
    assert paid_unserved_seconds(cancelled, bought, bought + 20, GRACE,
                                 served=False) == 3 * 86_400


@pytest.mark.parametrize(("error", "expected"), [
    # Proxmox: locks, node trouble and failed tasks pass; the request's own faults do not
    (Locked(500, "VM is locked (clone)"), Failure.TEMPORARY),
    (Transient(503, "service unavailable"), Failure.TEMPORARY),
    (TaskFailed(0, "clone failed: got timeout"), Failure.TEMPORARY),
    (VmidTaken(500, "VM 100 already exists"), Failure.TEMPORARY),
    (NotFound(404, "no such VM"), Failure.PERMANENT),
    (PveError(400, "parameter verification failed"), Failure.PERMANENT),
    (AlreadyExists(500, "already exists"), Failure.PERMANENT),
    (PermissionDenied(403, "Permission check failed"), Failure.PERMANENT),
    (OwnershipMismatch(0, "marker differs"), Failure.PERMANENT),
    # the host side
    (AllocationError("pool exhausted"), Failure.TEMPORARY),
    (HookFailed("hook exited 1"), Failure.TEMPORARY),
    (PlacementError("no node can take it"), Failure.PERMANENT),
    (TemplateError("missing variable"), Failure.PERMANENT),
    # the chain side: node errors, rate limits, timeouts pass; reverts and config do not
    (RpcError("eth_call", -32005, "rate limited"), Failure.TEMPORARY),
    (TransientRpcError("node down"), Failure.TEMPORARY),
    (Web3RPCError("{'code': -32005, 'message': 'rate limited'}"), Failure.TEMPORARY),
    (TimeExhausted("receipt not seen"), Failure.TEMPORARY),
    (requests.ConnectionError("refused"), Failure.TEMPORARY),
    (TimeoutError(), Failure.TEMPORARY),
    (OSError("disk full"), Failure.TEMPORARY),
    (TxFailed("mint would fail: OwnableUnauthorizedAccount"), Failure.PERMANENT),
    (TxNodeError("mint: the node could not estimate gas: rate limited"), Failure.TEMPORARY),
    (ContractLogicError("execution reverted"), Failure.PERMANENT),
    (UserError("no NFT contract configured"), Failure.PERMANENT),
    (ConfigError("proxmox.storage: bad value"), Failure.PERMANENT),
    # anything nobody classified is permanent, with its reason (never retried blindly)
    (ValueError("invalid literal for int()"), Failure.PERMANENT),
    (KeyError("net0"), Failure.PERMANENT),
])
def test_every_error_a_step_can_raise_has_a_class(error: Exception, expected: Failure) -> None:
    assert classify(error) is expected


def test_unclassified_errors_are_told_apart_for_the_log() -> None:
    assert is_classified(Locked(500, "x")) and is_classified(OSError())
    assert is_classified(Web3RPCError("x"))
    assert not is_classified(ValueError("x")) and not is_classified(KeyError("x"))


def test_waiting_on_the_chain_backs_off_without_counting_as_failure() -> None:
    assert [wait_delay(n) for n in range(8)] == [0.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    fresh = Progress()
    assert due(1, fresh, 100.0, {1: 99.0}) and not due(1, fresh, 100.0, {1: 99.0}, waits=1)
    assert due(1, fresh, 101.0, {1: 99.0}, waits=1)
    failing = Progress(attempts=3, last_error="x")  # the larger of the two delays applies
    assert not due(1, failing, 106.0, {1: 99.0}, waits=1) and due(1, failing, 107.0, {1: 99.0})
