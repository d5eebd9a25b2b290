"""Right before `gc` stops or destroys a subscription's VM, judge it again from fresh facts.

A run plans first and acts minutes later, one VM after another, and the listener may be
stopped meanwhile: a renewal can be confirmed in between, and on chain but not yet journaled.
So each step is re-judged at that moment from the journal, the chain time and the contract
itself, and taken only if all of them still call for it.
"""

from __future__ import annotations

from listener.chain.journal import Store
from listener.errors import UserError
from listener.ops.chain_view import CHAIN_ERRORS, ChainView
from listener.reconcile.decide import Action, Desired, Facts, Observed, desired_state, next_action
from listener.reconcile.observe import facts_of, observe
from listener.reconcile.progress import ProgressStore
from provisioner.inventory import Inventory


def still_due(planned: Action, fresh: Action | None) -> bool:
    """Is the ``planned`` step still right when the fresh verdict is ``fresh``? Stopping a VM
    that is now due for destruction is (it only comes first)."""
    return fresh is planned or (planned is Action.STOP and fresh is Action.DESTROY)


class SubscriptionRecheck:
    """Re-judges one subscription's planned step; ``chain`` None means no RPC answered, and
    then nothing is stopped or destroyed (a renewal may be on chain)."""

    def __init__(self, store: Store, inventory: Inventory, chain: ChainView | None, *,
                 grace_seconds: int, no_chain_reason: str | None = None) -> None:
        self.store = store
        self.inventory = inventory
        self.chain = chain
        self.grace_seconds = grace_seconds
        self.no_chain_reason = no_chain_reason or "no RPC answered"

    def changed(self, subscription_id: int, vmid: int, planned: Action) -> str | None:
        """None if the step is still due, else the result to record ("skipped: …" when the
        verdict changed, "failed: …" when it could not be checked)."""
        if self.chain is None:
            return (f"failed: not checked on chain ({self.no_chain_reason}); a subscription is "
                    "never stopped or destroyed unverified")
        sub = self.store.subscription(subscription_id)
        if sub is None:
            return "skipped: the subscription is no longer in the journal"
        observed, record = observe(sub, ProgressStore(self.store.conn).of(sub.id),
                                   self.inventory)
        if record is None or record.vmid != vmid:
            return "skipped: its VM is gone or was replaced since the plan"
        try:
            return self._judge(facts_of(sub), observed, subscription_id, planned)
        except CHAIN_ERRORS as exc:
            return f"failed: cannot check subscription #{subscription_id} on chain: {exc}"[:300]

    def _judge(self, journal: Facts, observed: Observed, subscription_id: int,
               planned: Action) -> str | None:
        assert self.chain is not None
        now = self.chain.confirmed_time(self.store.chain_state().chain_time).value
        assert now is not None
        fresh = next_action(journal, now, self.grace_seconds, observed)
        if not still_due(planned, fresh):
            verdict = fresh.value if fresh is not None else "nothing"
            return f"skipped: the journal now calls for {verdict} at chain time {now}"
        on_chain = self.chain.facts(subscription_id)
        if on_chain is None:
            raise UserError(f"the contract does not know subscription #{subscription_id}; "
                            "check chain.subscription_contract")
        if still_due(planned, next_action(on_chain, now, self.grace_seconds, observed)):
            return None
        return self._kept_by_chain(on_chain, now)

    def _kept_by_chain(self, on_chain: Facts, now: int) -> str:
        if desired_state(on_chain, now, self.grace_seconds) is Desired.RUNNING:
            return (f"skipped: still paid on chain until {on_chain.expires_at} (a renewal the "
                    "journal lacks: is `blockhost listen` running?)")
        return (f"skipped: on chain its grace period runs until "
                f"{on_chain.expires_at + self.grace_seconds}")
