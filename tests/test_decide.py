"""The pure decision functions, exhaustively, without I/O."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from listener.decide import (
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
