"""Apply the pure decisions of :mod:`listener.reconcile.decide` through the backends, one step
at a time.

Each step is journaled before and after in ``steps``; the inventory and the transaction
store make every step idempotent, so re-running a subscription after a crash at any line
converges without duplicate VMs, leaked ids or second mints. New VMs are built by
:class:`~listener.reconcile.vm_builder.VmBuilder`, the same steps ``vm create`` takes; what a
failure means comes from :mod:`listener.reconcile.failures`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import structlog

from listener.chain.journal import Store, Subscription
from listener.config import Config, PlanSize
from listener.crypto.errors import CryptoError
from listener.crypto.user_secret import decrypt_user_encrypted
from listener.errors import UserError
from listener.reconcile.dead_letters import DeadLetters
from listener.reconcile.decide import Action, Scope, SubscriptionState, next_action, permitted
from listener.reconcile.failures import Failure, classify, is_classified
from listener.reconcile.minter import Minter
from listener.reconcile.observe import (
    facts_of,
    observe,
    ref_of,
    subscription_state,
    vm_facts,
    vm_name,
)
from listener.reconcile.progress import Progress, ProgressStore, sealed_for
from listener.reconcile.vm_builder import Deferred, MintOrder, VmBuilder, seal_details
from listener.reconcile.vm_spec import vm_spec
from listener.redact import redact
from listener.writeback.nft import NftMinter
from listener.writeback.tx_errors import TxPending
from provisioner.backend import VMBackend
from provisioner.errors import OwnershipMismatch, VmidTaken
from provisioner.inventory import Inventory, Pools, VMRecord
from provisioner.network_hooks import run_hooks
from provisioner.placement import PlacementLimiter

log = structlog.get_logger(__name__)

MAX_STEPS_PER_PASS = 8
#: How the step journal marks a pass that ended waiting on the chain (not a failure).
WAITING = "waiting: "


@dataclass
class Services:
    """Everything one worker thread needs; built per thread by a factory."""

    config: Config
    store: Store
    inventory: Inventory
    backend: VMBackend
    minter: NftMinter | None
    server_key: bytes | None
    pools: Pools
    rpc_url_for_vm: str = ""
    chain_id: int | None = None
    #: (action, "done" | "failed", seconds) per step, e.g. for /metrics
    step_observer: Callable[[str, str, float], None] | None = None


class Reconciler:
    """Drives one subscription toward its desired state."""

    def __init__(self, services: Services, *, choose_node: Callable[[PlanSize], str],
                 limiter: PlacementLimiter | None = None) -> None:
        self.s = services
        self.choose_node = choose_node
        self.builder = VmBuilder(services.config, services.inventory, services.pools,
                                 backend=services.backend, minter=services.minter,
                                 chain_id=services.chain_id,
                                 rpc_url_for_vm=services.rpc_url_for_vm, limiter=limiter)
        self.progress = ProgressStore(services.store.conn)
        #: the last pass ended waiting on the chain (a receipt, the signer's funds)
        self.waiting = False

    def reconcile(self, subscription_id: int, chain_time: int,
                  scope: Scope = Scope.ALL) -> str | None:
        """Take steps until converged (or the next step is not permitted in ``scope``) or a
        step fails; return the last action taken."""
        last: str | None = None
        for _ in range(MAX_STEPS_PER_PASS):
            sub = self.s.store.subscription(subscription_id)
            if sub is None:
                return last
            progress = self.progress.of(sub.id)
            action: Action | None = None
            record: VMRecord | None = None
            try:
                observed, record = observe(sub, progress, self.s.inventory, self.s.backend)
                if observed.actual == "foreign" and record is not None:
                    raise OwnershipMismatch(0, f"the VM at vmid {record.vmid} no longer carries "
                                               "our ownership marker (edited behind our back?); "
                                               "it is left alone and nothing is cloned over it: "
                                               "check it, then `blockhost dlq retry`")
                wanted = next_action(facts_of(sub), chain_time, self.s.config.grace_seconds,
                                     observed)
                if wanted is None:
                    self._settle(sub, progress, chain_time)
                    return last
                if not permitted(wanted, scope):
                    return last  # withheld (catching up, or dead-lettered): not converged
                action = wanted
                if not self._resumes_a_wait(sub.id, action):
                    self.progress.journal_step(sub.id, action.value, "started")
                started = time.monotonic()
                try:
                    self._apply(action, sub, progress, record)
                finally:
                    if self.s.step_observer is not None:
                        failed = sys.exc_info()[0] is not None
                        self.s.step_observer(action.value, "failed" if failed else "done",
                                             time.monotonic() - started)
            except VmidTaken as exc:
                if action is not Action.CREATE_VM or record is None:
                    return self._failed(sub, progress, action, exc, Failure.PERMANENT)
                moved = self.builder.move_off_taken_vmid(record, exc)
                self.progress.journal_step(sub.id, action.value, "failed",
                                           f"VMID {record.vmid} is taken by a foreign VM; "
                                           f"moved to {moved.vmid}")
                log.warning("reconcile.vmid_taken", subscription=sub.id, vmid=record.vmid,
                            new_vmid=moved.vmid)
                continue
            except Deferred as exc:
                log.info("reconcile.deferred", subscription=sub.id,
                         action=action.value if action else None, reason=str(exc))
                return action.value if action is not None else None
            except TxPending as exc:
                # A chain write is on its way (or the signer needs funds: health is red).
                # Not a failure of this subscription: no attempt is counted.
                name = action.value if action is not None else "observe"
                # One row per change of what we wait for, not one per loop.
                self.progress.journal_step(sub.id, name, "failed", redact(f"{WAITING}{exc}")[:500],
                                           unless_repeated=True)
                log.info("reconcile.waiting_for_chain", subscription=sub.id, action=name,
                         detail=str(exc)[:200])
                self.waiting = True
                return name
            except Exception as exc:
                if not is_classified(exc):
                    log.exception("reconcile.unclassified_error", subscription=sub.id,
                                  action=action.value if action else None)
                return self._failed(sub, progress, action, exc, classify(exc))
            self.progress.journal_step(sub.id, action.value, "done")
            log.info("reconcile.step_done", subscription=sub.id, action=action.value)
            last = action.value
        return last

    def _resumes_a_wait(self, subscription_id: int, action: Action) -> bool:
        """Is this pass the same step, still waiting on the chain? Then its "started" line is
        already in the journal: a wait writes no new rows until something changes."""
        last = self.progress.last_step(subscription_id)
        return (last is not None and last[0] == action.value and last[1] == "failed"
                and last[2].startswith(WAITING))

    def apply_one(self, subscription_id: int, action: Action) -> None:
        """Apply one chosen step by hand (``blockhost gc --execute``), journaled like the
        daemon's; a failure is recorded on the subscription and re-raised."""
        sub = self.s.store.subscription(subscription_id)
        if sub is None:
            raise UserError(f"subscription {subscription_id} is not in the journal")
        progress = self.progress.of(sub.id)
        record = self.s.inventory.live_for_subscription(sub.id)
        self.progress.journal_step(sub.id, action.value, "started", "by hand")
        try:
            self._apply(action, sub, progress, record)
        except Exception as exc:
            reason = redact(f"{action.value}: {exc}")[:500]
            self.progress.journal_step(sub.id, action.value, "failed", reason)
            self.progress.save(sub.id, progress, replace(progress, last_error=reason))
            raise
        self.progress.journal_step(sub.id, action.value, "done", "by hand")

    def _failed(self, sub: Subscription, progress: Progress, action: Action | None,
                exc: Exception, failure: Failure) -> str:
        """Record a failed step. A permanent failure becomes a dead letter; a temporary one
        (an outage of Proxmox or of the RPC) is retried with capped backoff for as long as it
        takes and never dead-letters: health and /metrics show it meanwhile."""
        name = action.value if action is not None else "observe"
        detail = str(exc) if is_classified(exc) else f"{type(exc).__name__}: {exc}"
        reason = redact(f"{name}: {detail}")[:500]
        attempts = progress.attempts + 1
        self.progress.journal_step(sub.id, name, "failed", reason)
        self.progress.save(sub.id, progress,
                           replace(progress, last_error=reason, attempts=attempts))
        if failure is Failure.PERMANENT:
            entry = DeadLetters(self.s.store.conn).add(
                sub.id, action=name, reason=reason, attempts=attempts,
                facts_block=sub.updated_block)
            log.error("reconcile.dead_lettered", subscription=sub.id, action=name,
                      error=reason, attempts=attempts, dead_letter=entry)
        else:
            log.warning("reconcile.step_failed", subscription=sub.id, action=name,
                        error=reason, attempts=attempts)
        return name

    def _settle(self, sub: Subscription, progress: Progress, chain_time: int) -> None:
        """Converged: failures are over, and the state is judged without them."""
        cleared = replace(progress, last_error=None, attempts=0)
        state = subscription_state(sub, cleared, self.s.inventory, chain_time,
                                   self.s.config.grace_seconds)
        self.progress.save(sub.id, progress, replace(cleared, state=state))

    # -- steps ---------------------------------------------------------------------------

    def _apply(self, action: Action, sub: Subscription, progress: Progress,
               record: VMRecord | None) -> None:
        if action is Action.ALLOCATE:
            self._allocate(sub, progress)
        elif action is Action.MINT:
            assert record is not None
            self._mint(sub, progress, record)
        elif action is Action.CREATE_VM:
            assert record is not None
            self._create(sub, progress, record)
        elif action is Action.START:
            assert record is not None
            self.s.backend.start(ref_of(record))
            self.s.inventory.set_state(record.id, "running")
        elif action is Action.STOP:
            assert record is not None
            self.s.backend.stop(ref_of(record))
            self.s.inventory.set_state(record.id, "stopped")
        elif action is Action.DESTROY:
            assert record is not None
            if record.state != "reserved":
                self.s.backend.destroy(ref_of(record))
                # before the release, so the address is not handed out while routed (bug 24)
                hooks = self.s.config.network.hooks
                run_hooks(hooks.on_destroy, "destroyed", vm_facts(self.s.config, record),
                          timeout=hooks.timeout)
            self.s.inventory.release(record.id)
        elif action is Action.UPDATE_EXPIRY:
            self._update_expiry(sub, progress)
        elif action is Action.UPDATE_CREDENTIALS:
            assert record is not None
            self._update_credentials(sub, progress, record)

    def _allocate(self, sub: Subscription, progress: Progress) -> None:
        self.progress.save(sub.id, progress,
                           replace(progress, state=SubscriptionState.PROVISIONING))
        self.s.inventory.reserve(
            vm_name(self.s.config, sub.id), pools=self.s.pools,
            node=self.choose_node(self.s.config.plan_size(sub.plan_id)),
            subscription_id=sub.id, owner_wallet=sub.subscriber,
            username=self.s.config.vm.username, want_ipv6=bool(self.s.pools.ipv6_prefix),
        )

    def _minter(self) -> Minter:
        return self.builder.require_minter("cannot mint")

    def _user_secret(self, sub: Subscription) -> tuple[bytes | None, str, str | None]:
        """(the subscriber's signature, publicSecret, note when no details can be sealed).

        The signature (decrypted from the purchase) keys the AES-GCM seal; a payload we cannot
        use still gets the user an NFT, just without details."""
        cfg = self.s.config
        if self.s.server_key is None:
            return None, cfg.public_secret_default, ("server key not loaded; NFT minted without "
                                                     "connection details")
        if not sub.user_encrypted:
            return None, cfg.public_secret_default, ("subscription carries no userEncrypted; "
                                                     "NFT minted without connection details")
        try:
            secret = decrypt_user_encrypted(
                self.s.server_key, sub.user_encrypted, subscriber=sub.subscriber,
                public_secret_default=cfg.public_secret_default)
        except CryptoError as exc:
            return None, cfg.public_secret_default, f"credentials not encrypted: {exc}"
        return secret.signature, secret.public_secret, None

    def _username(self, record: VMRecord) -> str:
        return record.username or self.s.config.vm.username

    def _mint(self, sub: Subscription, progress: Progress, record: VMRecord) -> None:
        signature, public_secret, note = self._user_secret(sub)
        order = MintOrder(key=f"mint:sub:{sub.id}", subscription_id=sub.id, to=sub.subscriber,
                          signature=signature, public_secret=public_secret,
                          username=self._username(record), expires_at=sub.expires_at)
        token_id, sealed = self.builder.mint(order, record, hint="cannot mint")
        self.progress.save(sub.id, progress, replace(
            progress, token_id=token_id, nft_expires_at=sub.expires_at, credential_note=note,
            credentials_vm=sealed_for(record.id, names_it=sealed, can_seal=signature is not None)))

    def _update_expiry(self, sub: Subscription, progress: Progress) -> None:
        assert progress.token_id is not None
        self._minter().update_expiration(sub.id, progress.token_id, sub.expires_at)
        self.progress.save(sub.id, progress, replace(progress, nft_expires_at=sub.expires_at))

    def _update_credentials(self, sub: Subscription, progress: Progress,
                            record: VMRecord) -> None:
        """The VM was rebuilt (new address): re-seal the details for the same signature."""
        assert progress.token_id is not None
        signature, _secret, note = self._user_secret(sub)
        if signature is not None:
            self._minter().update_user_encrypted(
                sub.id, progress.token_id,
                seal_details(signature, record, self._username(record)), generation=record.id)
        self.progress.save(sub.id, progress, replace(
            progress, credentials_vm=record.id if signature is not None else None,
            credential_note=note))

    def _create(self, sub: Subscription, progress: Progress, record: VMRecord) -> None:
        cfg = self.s.config
        user_data = self.builder.user_data(cfg.vm.cloud_init_template, record,
                                           token_id=progress.token_id, wallet=sub.subscriber)
        spec = vm_spec(cfg, record, self.s.pools, size=cfg.plan_size(sub.plan_id),
                       user_data=user_data)
        self.builder.create(spec, record)


def retry_delay(attempts: int) -> float:
    """Backoff between passes for a failing subscription: 2 s doubling, capped at 5 min."""
    return min(300.0, 2.0 * (2 ** max(0, attempts - 1))) if attempts else 0.0


#: Longest pause between passes of a subscription that waits on the chain (a receipt, funds).
MAX_WAIT_DELAY = 60.0


def wait_delay(waits: int) -> float:
    """Backoff between passes for a subscription waiting on the chain: 2 s doubling, capped
    at a minute (waiting is not failing: no attempt is counted, but each pass costs calls)."""
    return min(MAX_WAIT_DELAY, 2.0 * (2 ** max(0, waits - 1))) if waits else 0.0


def due(subscription_id: int, progress: Progress, now: float,
        last_try: dict[int, float], waits: int = 0) -> bool:
    delay = max(retry_delay(progress.attempts), wait_delay(waits))
    return now - last_try.get(subscription_id, 0.0) >= delay
