"""Apply the pure decisions of :mod:`listener.reconcile.decide` through the backends, one step at a time.

Each step is journaled before and after in ``steps``; the inventory and the transaction
store make every step idempotent, so re-running a subscription after a crash at any line
converges without duplicate VMs, leaked ids or second mints.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from listener.config import Config, PlanSize
from listener.crypto.core import (
    ConnectionDetails,
    CryptoError,
    decrypt_user_encrypted,
    encrypt_connection_details,
)
from listener.reconcile.dead_letters import DeadLetters
from listener.reconcile.decide import Action, Desired, Facts, Observed, desired_state, display_state, next_action
from listener.errors import BlockhostError, UserError
from listener.writeback.nft import MintRequest, NftMinter, signing_page_base64
from listener.chain.journal import Store, Subscription
from listener.writeback.txmanager import TxPending
from listener.reconcile.vm_spec import cloud_init_variables, vm_spec
from provisioner.backend import VMBackend, VMRef, parse_marker
from provisioner.cloudinit import TemplateError, render
from provisioner.errors import (
    AlreadyExists,
    OwnershipMismatch,
    PermissionDenied,
    ProvisionerError,
    VmidTaken,
)
from provisioner.inventory import AllocationError, Inventory, Pools, VMRecord
from provisioner.network_hooks import VMFacts, run_hooks
from provisioner.placement import PlacementLimiter

log = structlog.get_logger(__name__)

#: After this many consecutive failures a subscription shows as ``failed`` (still retried).
FAILED_AFTER_ATTEMPTS = 5
#: ... and after this many it goes to the dead-letter list (retried only by an operator).
DEAD_LETTER_AFTER_ATTEMPTS = 10
MAX_STEPS_PER_PASS = 8
#: Inventory states that exist on Proxmox (so Proxmox's own view is worth reading).
BUILT_STATES = frozenset({"created", "running", "stopped"})
#: Failures that no retry can fix without an operator: straight to the dead-letter list.
PERMANENT_ERRORS: tuple[type[Exception], ...] = (OwnershipMismatch, PermissionDenied,
                                                 AlreadyExists, UserError, TemplateError)
#: Failures recorded on the subscription (anything else is a bug: logged with a traceback).
STEP_ERRORS: tuple[type[Exception], ...] = (BlockhostError, ProvisionerError, AllocationError,
                                            TemplateError, OSError)


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


def vm_name(config: Config, subscription_id: int) -> str:
    return f"{config.vm.name_prefix}{subscription_id:03d}"


def facts_of(sub: Subscription) -> Facts:
    return Facts(expires_at=sub.expires_at, cancelled=sub.cancelled, cancelled_at=sub.cancelled_at)


def observe(sub: Subscription, inventory: Inventory,
            backend: VMBackend | None = None) -> tuple[Observed, VMRecord | None]:
    """Our progress on ``sub``; with a ``backend``, also Proxmox's view of a built VM."""
    record = inventory.live_for_subscription(sub.id)
    stale = (sub.credentials_vm is not None and record is not None
             and sub.credentials_vm != record.id)
    actual = (actual_state(backend, record)
              if backend is not None and record is not None and record.state in BUILT_STATES
              else None)
    return Observed(vm_state=record.state if record else None, token_id=sub.token_id,
                    nft_expires_at=sub.nft_expires_at, credentials_stale=stale,
                    actual=actual), record


def actual_state(backend: VMBackend, record: VMRecord) -> str:
    """Proxmox's view of our VM: its power state, or "missing" when it is gone or the VM at
    that VMID is no longer provably the instance we built (then it is never touched)."""
    status = backend.status(ref_of(record))
    if status is None:
        return "missing"
    marker = parse_marker(status.description)
    if marker is None or marker.subscription_id != record.subscription_id \
            or marker.name != record.name:
        return "missing"
    if record.smbios_uuid and status.smbios_uuid and status.smbios_uuid != record.smbios_uuid:
        return "missing"
    return status.power


def subscription_state(sub: Subscription, inventory: Inventory, chain_time: int,
                       grace_seconds: int) -> str:
    observed, _ = observe(sub, inventory)
    failed = sub.attempts >= FAILED_AFTER_ATTEMPTS and bool(sub.last_error)
    return display_state(desired_state(facts_of(sub), chain_time, grace_seconds), observed, failed)


def ref_of(record: VMRecord) -> VMRef:
    """How the backend finds and proves the record's VM (``subscription_id`` None: manual)."""
    return VMRef(vmid=record.vmid, node=record.node, name=record.name,
                 subscription_id=record.subscription_id, smbios_uuid=record.smbios_uuid)


class Deferred(Exception):
    """A step that cannot start now (e.g. the node's create slots are full): not a failure,
    the next pass tries again."""


def vm_facts(config: Config, record: VMRecord) -> VMFacts:
    return VMFacts(name=record.name, vmid=record.vmid, node=record.node,
                   bridge=config.network.bridge, ipv4=record.ipv4, ipv6=record.ipv6,
                   subscription_id=record.subscription_id)


class Reconciler:
    """Drives one subscription toward its desired state."""

    def __init__(self, services: Services, *, choose_node: Callable[[PlanSize], str],
                 limiter: PlacementLimiter | None = None) -> None:
        self.s = services
        self.choose_node = choose_node
        self.limiter = limiter

    def reconcile(self, subscription_id: int, chain_time: int) -> str | None:
        """Take steps until converged or a step fails; return the last action taken."""
        last: str | None = None
        for _ in range(MAX_STEPS_PER_PASS):
            sub = self.s.store.subscription(subscription_id)
            if sub is None:
                return last
            action: Action | None = None
            record: VMRecord | None = None
            try:
                observed, record = observe(sub, self.s.inventory, self.s.backend)
                action = next_action(facts_of(sub), chain_time, self.s.config.grace_seconds,
                                     observed)
                if action is None:
                    self._settle(sub, chain_time)
                    return last
                self.s.store.journal_step(sub.id, action.value, "started")
                started = time.monotonic()
                try:
                    self._apply(action, sub, record)
                finally:
                    if self.s.step_observer is not None:
                        failed = sys.exc_info()[0] is not None
                        self.s.step_observer(action.value, "failed" if failed else "done",
                                             time.monotonic() - started)
            except VmidTaken as exc:
                if action is not Action.CREATE_VM or record is None:
                    return self._failed(sub, action, exc)
                # Someone else's VM sits on our id: quarantine it, take the next free one.
                moved = self.s.inventory.reassign_vmid(record.id, self.s.pools, reason=str(exc))
                self.s.store.journal_step(sub.id, action.value, "failed",
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
                self.s.store.journal_step(sub.id, name, "failed", f"waiting: {exc}"[:500])
                log.info("reconcile.waiting_for_chain", subscription=sub.id, action=name,
                         detail=str(exc)[:200])
                return name
            except STEP_ERRORS as exc:
                return self._failed(sub, action, exc)
            self.s.store.journal_step(sub.id, action.value, "done")
            log.info("reconcile.step_done", subscription=sub.id, action=action.value)
            last = action.value
        return last

    def apply_one(self, subscription_id: int, action: Action) -> None:
        """Apply one chosen step by hand (``blockhost gc --execute``), journaled like the
        daemon's; a failure is recorded on the subscription and re-raised."""
        sub = self.s.store.subscription(subscription_id)
        if sub is None:
            raise UserError(f"subscription {subscription_id} is not in the journal")
        record = self.s.inventory.live_for_subscription(sub.id)
        self.s.store.journal_step(sub.id, action.value, "started", "by hand")
        try:
            self._apply(action, sub, record)
        except STEP_ERRORS as exc:
            reason = f"{action.value}: {exc}"[:500]
            self.s.store.journal_step(sub.id, action.value, "failed", reason)
            self.s.store.update_progress(sub.id, last_error=reason)
            raise
        self.s.store.journal_step(sub.id, action.value, "done", "by hand")

    def _failed(self, sub: Subscription, action: Action | None, exc: Exception) -> str:
        """Record a failed step; permanent errors and exhausted budgets become dead letters."""
        name = action.value if action is not None else "observe"
        reason = f"{name}: {exc}"[:500]
        attempts = sub.attempts + 1
        self.s.store.journal_step(sub.id, name, "failed", reason)
        self.s.store.update_progress(sub.id, last_error=reason, attempts=attempts)
        permanent = isinstance(exc, PERMANENT_ERRORS) and not isinstance(exc, VmidTaken)
        if permanent or attempts >= DEAD_LETTER_AFTER_ATTEMPTS:
            entry = DeadLetters(self.s.store.conn).add(
                sub.id, action=name, reason=reason, attempts=attempts,
                facts_block=sub.updated_block)
            log.error("reconcile.dead_lettered", subscription=sub.id, action=name,
                      error=reason, attempts=attempts, permanent=permanent, dead_letter=entry)
        else:
            log.warning("reconcile.step_failed", subscription=sub.id, action=name,
                        error=reason, attempts=attempts)
        return name

    def _settle(self, sub: Subscription, chain_time: int) -> None:
        state = subscription_state(sub, self.s.inventory, chain_time, self.s.config.grace_seconds)
        if state != sub.state or sub.last_error or sub.attempts:
            self.s.store.update_progress(sub.id, state=state, last_error=None, attempts=0)

    # -- steps ---------------------------------------------------------------------------

    def _apply(self, action: Action, sub: Subscription, record: VMRecord | None) -> None:
        if action is Action.ALLOCATE:
            self._allocate(sub)
        elif action is Action.MINT:
            assert record is not None
            self._mint(sub, record)
        elif action is Action.CREATE_VM:
            assert record is not None
            self._create(sub, record)
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
            self._update_expiry(sub)
        elif action is Action.UPDATE_CREDENTIALS:
            assert record is not None
            self._update_credentials(sub, record)

    def _allocate(self, sub: Subscription) -> None:
        self.s.store.update_progress(sub.id, state="provisioning")
        self.s.inventory.reserve(
            vm_name(self.s.config, sub.id), pools=self.s.pools,
            node=self.choose_node(self.s.config.plan_size(sub.plan_id)),
            subscription_id=sub.id, owner_wallet=sub.subscriber,
            username=self.s.config.vm.username, want_ipv6=bool(self.s.pools.ipv6_prefix),
        )

    def _minter(self) -> NftMinter:
        if self.s.minter is None:
            raise UserError("no NFT contract configured (chain.nft_contract); cannot mint")
        return self.s.minter

    def _sealed_details(self, sub: Subscription, record: VMRecord) -> tuple[bytes, str, str | None]:
        """(userEncrypted for the NFT, publicSecret, note when no details could be sealed).

        The subscriber's signature (decrypted from the purchase) keys the AES-GCM seal; a
        payload we cannot use still gets the user an NFT, just without details."""
        cfg = self.s.config
        if self.s.server_key is None:
            return b"", cfg.public_secret_default, ("server key not loaded; NFT minted without "
                                                    "connection details")
        if not sub.user_encrypted:
            return b"", cfg.public_secret_default, ("subscription carries no userEncrypted; NFT "
                                                    "minted without connection details")
        try:
            secret = decrypt_user_encrypted(
                self.s.server_key, sub.user_encrypted, subscriber=sub.subscriber,
                public_secret_default=cfg.public_secret_default)
        except CryptoError as exc:
            return b"", cfg.public_secret_default, f"credentials not encrypted: {exc}"
        details = ConnectionDetails(hostname=record.ipv6 or record.ipv4 or record.name,
                                    port=22, username=record.username or cfg.vm.username)
        return encrypt_connection_details(secret.signature, details), secret.public_secret, None

    def _mint(self, sub: Subscription, record: VMRecord) -> None:
        minter = self._minter()
        cfg = self.s.config
        user_encrypted, public_secret, note = self._sealed_details(sub, record)
        request = MintRequest(
            to=sub.subscriber, user_encrypted=user_encrypted, public_secret=public_secret,
            description=cfg.nft.description, image_uri=cfg.nft.image_uri,
            animation_url_base64=signing_page_base64(cfg.nft.signing_page_path),
            expires_at=sub.expires_at,
        )
        token_id = minter.mint(f"mint:sub:{sub.id}", sub.id, request)
        self.s.store.update_progress(sub.id, token_id=token_id, nft_expires_at=sub.expires_at,
                                     credential_note=note,
                                     credentials_vm=record.id if user_encrypted else None)

    def _update_expiry(self, sub: Subscription) -> None:
        assert sub.token_id is not None
        self._minter().update_expiration(sub.id, sub.token_id, sub.expires_at)
        self.s.store.update_progress(sub.id, nft_expires_at=sub.expires_at)

    def _update_credentials(self, sub: Subscription, record: VMRecord) -> None:
        """The VM was rebuilt (new address): re-seal the details for the same signature."""
        assert sub.token_id is not None
        user_encrypted, _secret, note = self._sealed_details(sub, record)
        if user_encrypted:
            self._minter().update_user_encrypted(sub.id, sub.token_id, user_encrypted,
                                                 generation=record.id)
        self.s.store.update_progress(sub.id, credentials_vm=record.id if user_encrypted else None,
                                     credential_note=note)

    def _create(self, sub: Subscription, record: VMRecord) -> None:
        cfg = self.s.config
        user_data = render(cfg.vm.cloud_init_template, cloud_init_variables(
            cfg, record, token_id=sub.token_id, wallet=sub.subscriber,
            chain_id=self.s.chain_id or cfg.chain.chain_id, rpc_url=self.s.rpc_url_for_vm))
        spec = vm_spec(cfg, record, self.s.pools, size=cfg.plan_size(sub.plan_id),
                       user_data=user_data)
        if self.limiter is not None and not self.limiter.try_acquire_node(record.node):
            raise Deferred(f"node {record.node} has no free create slot")
        try:
            ref = self.s.backend.create(spec)
        finally:
            if self.limiter is not None:
                self.limiter.release(record.node)
        # Hooks run before the record says "running": if one fails, the next pass creates
        # again (adopting the VM) and re-runs them, so hooks must be idempotent.
        hooks = cfg.network.hooks
        run_hooks(hooks.on_create, "created", vm_facts(cfg, record), timeout=hooks.timeout)
        self.s.inventory.set_state(record.id, "running", smbios_uuid=ref.smbios_uuid)


def retry_delay(attempts: int) -> float:
    """Backoff between passes for a failing subscription: 2 s doubling, capped at 5 min."""
    return min(300.0, 2.0 * (2 ** max(0, attempts - 1))) if attempts else 0.0


def due(sub: Subscription, now: float, last_try: dict[int, float]) -> bool:
    return now - last_try.get(sub.id, 0.0) >= retry_delay(sub.attempts)
