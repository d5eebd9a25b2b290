"""The pure decision functions, exhaustively, without I/O."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from listener.reconcile.decide import (
    Action,
    Desired,
    Facts,
    Observed,
    desired_state,
    display_state,
    grace_anchor,
    next_action,
)

GRACE = 7 * 86400
EXPIRES = 1_000_000
VM_STATES = (None, "reserved", "created", "running", "stopped")


class TestDesiredState:
    @pytest.mark.parametrize(
        ("chain_time", "expected"),
        [
            (EXPIRES - 1, Desired.RUNNING),
            (EXPIRES, Desired.STOPPED),  # expiry is exact: T >= expiresAt is expired
            (EXPIRES + GRACE - 1, Desired.STOPPED),
            (EXPIRES + GRACE, Desired.DESTROYED),
            (EXPIRES + 10 * GRACE, Desired.DESTROYED),
        ],
    )
    def test_table_rows(self, chain_time: int, expected: Desired) -> None:
        assert desired_state(Facts(EXPIRES, cancelled=False), chain_time, GRACE) is expected

    def test_cancelled_stops_immediately_and_grace_counts_from_cancellation(self) -> None:
        facts = Facts(expires_at=EXPIRES + 50 * 86400, cancelled=True, cancelled_at=EXPIRES)
        assert grace_anchor(facts) == EXPIRES
        assert desired_state(facts, EXPIRES, GRACE) is Desired.STOPPED
        assert desired_state(facts, EXPIRES + GRACE, GRACE) is Desired.DESTROYED

    def test_zero_grace_destroys_at_expiry(self) -> None:
        assert desired_state(Facts(EXPIRES, False), EXPIRES, 0) is Desired.DESTROYED

    @given(st.integers(0, 2**40), st.integers(0, 2**40), st.integers(0, 2**30), st.booleans())
    def test_monotonic_in_time(self, expires: int, t: int, grace: int, cancelled: bool) -> None:
        """Time only moves a subscription forward: running -> stopped -> destroyed."""
        order = [Desired.RUNNING, Desired.STOPPED, Desired.DESTROYED]
        facts = Facts(expires, cancelled, expires if cancelled else None)
        assert order.index(desired_state(facts, t, grace)) <= order.index(
            desired_state(facts, t + 1, grace))


class TestNextAction:
    @pytest.mark.parametrize(
        ("vm_state", "token", "expected"),
        [
            (None, None, Action.ALLOCATE),
            (None, 7, Action.ALLOCATE),  # extended after destroy: a fresh VM
            ("reserved", None, Action.MINT),
            ("reserved", 7, Action.CREATE_VM),
            ("created", 7, Action.START),
            ("stopped", 7, Action.START),  # extended while suspended
            ("running", 7, None),
        ],
    )
    def test_running(self, vm_state: str | None, token: int | None, expected: Action | None) -> None:
        observed = Observed(vm_state, token)
        assert next_action(Facts(EXPIRES, False), EXPIRES - 1, GRACE, observed) is expected

    @pytest.mark.parametrize(
        ("vm_state", "expected"),
        [(None, None), ("reserved", Action.DESTROY), ("created", Action.STOP),
         ("running", Action.STOP), ("stopped", None)],
    )
    def test_grace_period(self, vm_state: str | None, expected: Action | None) -> None:
        assert next_action(Facts(EXPIRES, False), EXPIRES, GRACE, Observed(vm_state, 1)) is expected

    @pytest.mark.parametrize("vm_state", VM_STATES)
    def test_after_grace(self, vm_state: str | None) -> None:
        expected = None if vm_state is None else Action.DESTROY
        got = next_action(Facts(EXPIRES, False), EXPIRES + GRACE, GRACE, Observed(vm_state, 1))
        assert got is expected

    def test_every_combination_converges(self) -> None:
        """Applying the chosen actions always reaches a fixed point within a few steps."""
        effects = {
            Action.ALLOCATE: lambda o: Observed("reserved", o.token_id),
            Action.MINT: lambda o: Observed(o.vm_state, 1),
            Action.CREATE_VM: lambda o: Observed("running", o.token_id),
            Action.START: lambda o: Observed("running", o.token_id),
            Action.STOP: lambda o: Observed("stopped", o.token_id),
            Action.DESTROY: lambda o: Observed(None, o.token_id),
        }
        times = [EXPIRES - 1, EXPIRES, EXPIRES + GRACE]
        for vm_state, token, t, cancelled in itertools.product(VM_STATES, (None, 3), times,
                                                               (False, True)):
            facts = Facts(EXPIRES, cancelled, EXPIRES - 10 if cancelled else None)
            observed = Observed(vm_state, token)
            for _ in range(5):
                action = next_action(facts, t, GRACE, observed)
                if action is None:
                    break
                observed = effects[action](observed)
            else:
                pytest.fail(f"no fixed point from {vm_state}, {token}, {t}, {cancelled}")
            desired = desired_state(facts, t, GRACE)
            expected_vm = {Desired.RUNNING: {"running"}, Desired.STOPPED: {None, "stopped"},
                           Desired.DESTROYED: {None}}[desired]
            assert observed.vm_state in expected_vm


class TestDisplayState:
    def test_states(self) -> None:
        assert display_state(Desired.RUNNING, Observed(None, None), False) == "pending"
        assert display_state(Desired.RUNNING, Observed("reserved", None), False) == "provisioning"
        assert display_state(Desired.RUNNING, Observed("running", 1), False) == "active"
        assert display_state(Desired.STOPPED, Observed("stopped", 1), False) == "suspended"
        assert display_state(Desired.DESTROYED, Observed(None, 1), False) == "destroyed"
        assert display_state(Desired.RUNNING, Observed(None, None), True) == "failed"


ACTUALS = (None, "missing", "running", "stopped")


class TestRenewalsAndDrift:
    """SPEC §5's renewal rows and VMs changed behind our back."""

    def test_extended_while_running_updates_the_nft_expiry(self) -> None:
        facts = Facts(EXPIRES + 86400, False)
        behind = Observed("running", 7, nft_expires_at=EXPIRES, actual="running")
        assert next_action(facts, EXPIRES - 1, GRACE, behind) is Action.UPDATE_EXPIRY
        current = Observed("running", 7, nft_expires_at=EXPIRES + 86400, actual="running")
        assert next_action(facts, EXPIRES - 1, GRACE, current) is None
        unknown = Observed("running", 7, nft_expires_at=None)
        assert next_action(facts, EXPIRES - 1, GRACE, unknown) is None

    def test_extended_while_suspended_starts_before_updating_the_nft(self) -> None:
        facts = Facts(EXPIRES + 86400, False)
        suspended = Observed("stopped", 7, nft_expires_at=EXPIRES)
        assert next_action(facts, EXPIRES + 10, GRACE, suspended) is Action.START
        started = Observed("running", 7, nft_expires_at=EXPIRES)
        assert next_action(facts, EXPIRES + 10, GRACE, started) is Action.UPDATE_EXPIRY

    def test_extended_after_destroy_builds_a_fresh_vm_with_new_credentials(self) -> None:
        facts = Facts(EXPIRES + 30 * 86400, False)
        t = EXPIRES + GRACE + 5
        steps = []
        observed = Observed(None, 7, nft_expires_at=EXPIRES)
        effects = {
            Action.ALLOCATE: lambda o: Observed("reserved", 7, o.nft_expires_at, True),
            Action.UPDATE_CREDENTIALS: lambda o: Observed("reserved", 7, o.nft_expires_at, False),
            Action.CREATE_VM: lambda o: Observed("running", 7, o.nft_expires_at, False, "running"),
            Action.UPDATE_EXPIRY: lambda o: Observed("running", 7, facts.expires_at, False, "running"),
        }
        while (action := next_action(facts, t, GRACE, observed)) is not None:
            steps.append(action)
            observed = effects[action](observed)
        assert steps == [Action.ALLOCATE, Action.UPDATE_CREDENTIALS, Action.CREATE_VM,
                         Action.UPDATE_EXPIRY]

    @pytest.mark.parametrize(("vm_state", "actual", "expected"), [
        ("running", "missing", Action.CREATE_VM),   # deleted by hand: rebuilt on its ids
        ("running", "stopped", Action.START),       # stopped by hand: started again
        ("stopped", "missing", Action.CREATE_VM),
        ("running", "running", None),
    ])
    def test_paid_vm_drift(self, vm_state: str, actual: str, expected: Action | None) -> None:
        observed = Observed(vm_state, 7, nft_expires_at=EXPIRES, actual=actual)
        assert next_action(Facts(EXPIRES, False), EXPIRES - 1, GRACE, observed) is expected

    @pytest.mark.parametrize(("vm_state", "actual", "expected"), [
        ("stopped", "running", Action.STOP),   # started by hand while suspended
        ("stopped", "missing", None),          # gone already: ids released when grace ends
        ("running", "missing", None),
        ("stopped", "stopped", None),
    ])
    def test_suspended_vm_drift(self, vm_state: str, actual: str, expected: Action | None) -> None:
        observed = Observed(vm_state, 7, actual=actual)
        assert next_action(Facts(EXPIRES, False), EXPIRES + 1, GRACE, observed) is expected

    def test_missing_vm_after_grace_still_releases_its_ids(self) -> None:
        observed = Observed("stopped", 7, actual="missing")
        assert next_action(Facts(EXPIRES, False), EXPIRES + GRACE, GRACE, observed) is Action.DESTROY

    def test_active_only_when_proxmox_agrees(self) -> None:
        assert display_state(Desired.RUNNING, Observed("running", 1, actual="stopped"),
                             False) == "provisioning"

    def test_every_combination_converges(self) -> None:
        """All inventory × NFT × Proxmox views × times reach the desired fixed point."""
        expires_new = EXPIRES + 5
        facts_by_case = [Facts(expires_new, False), Facts(expires_new, True, EXPIRES - 10)]

        def effects(action: Action, o: Observed, facts: Facts) -> Observed:
            if action is Action.ALLOCATE:
                return Observed("reserved", o.token_id, o.nft_expires_at,
                                credentials_stale=o.token_id is not None)
            if action is Action.MINT:
                return Observed(o.vm_state, 1, facts.expires_at, False, o.actual)
            if action is Action.UPDATE_CREDENTIALS:
                return Observed(o.vm_state, o.token_id, o.nft_expires_at, False, o.actual)
            if action is Action.UPDATE_EXPIRY:
                return Observed(o.vm_state, o.token_id, facts.expires_at, False, o.actual)
            if action in (Action.CREATE_VM, Action.START):
                return Observed("running", o.token_id, o.nft_expires_at, False, "running")
            if action is Action.STOP:
                return Observed("stopped", o.token_id, o.nft_expires_at, False, "stopped")
            return Observed(None, o.token_id, o.nft_expires_at, False, None)

        times = [EXPIRES - 1, expires_new, expires_new + GRACE]
        for vm_state, token, actual, nft_exp, stale, t, facts in itertools.product(
                VM_STATES, (None, 3), ACTUALS, (None, EXPIRES, expires_new), (False, True),
                times, facts_by_case):
            observed = Observed(vm_state, token, nft_exp if token is not None else None,
                                stale and token is not None, actual if vm_state else None)
            for _ in range(8):
                action = next_action(facts, t, GRACE, observed)
                if action is None:
                    break
                observed = effects(action, observed, facts)
            else:
                pytest.fail(f"no fixed point from {vm_state}, {token}, {actual}, {t}, {facts}")
            desired = desired_state(facts, t, GRACE)
            if desired is Desired.RUNNING:
                assert (observed.vm_state, observed.actual) in {("running", "running"),
                                                                 ("running", None)}
                assert not observed.credentials_stale
                assert observed.nft_expires_at in (None, facts.expires_at)
            elif desired is Desired.STOPPED:
                assert observed.vm_state in {None, "stopped", "running", "created"}
                assert observed.actual in {None, "stopped", "missing"}
            else:
                assert observed.vm_state is None
