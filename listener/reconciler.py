"""Apply the pure decisions of :mod:`listener.decide` through the backends, one step at a time.

Each step is journaled before and after in ``steps``; the inventory and the transaction
store make every step idempotent, so re-running a subscription after a crash at any line
converges without duplicate VMs, leaked ids or second mints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import structlog

from listener.config import Config
from listener.crypto import (
    ConnectionDetails,
    CryptoError,
    decrypt_user_encrypted,
    encrypt_connection_details,
)
from listener.decide import Action, Desired, Facts, Observed, desired_state, display_state, next_action
from listener.errors import BlockhostError
from listener.nft import MintRequest, NftMinter, signing_page_base64
from listener.store import Store, Subscription
from provisioner.backend import VMBackend, VMRef, VMSpec
from provisioner.cloudinit import render
from provisioner.errors import ProvisionerError
from provisioner.inventory import AllocationError, Inventory, Pools, VMRecord

log = structlog.get_logger(__name__)

#: After this many consecutive failures a subscription shows as ``failed`` (still retried).
FAILED_AFTER_ATTEMPTS = 5
MAX_STEPS_PER_PASS = 8


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


def vm_name(config: Config, subscription_id: int) -> str:
    return f"{config.vm.name_prefix}{subscription_id:03d}"


def facts_of(sub: Subscription) -> Facts:
    return Facts(expires_at=sub.expires_at, cancelled=sub.cancelled, cancelled_at=sub.cancelled_at)


def observe(sub: Subscription, inventory: Inventory) -> tuple[Observed, VMRecord | None]:
    record = inventory.live_for_subscription(sub.id)
    return Observed(vm_state=record.state if record else None, token_id=sub.token_id), record


def subscription_state(sub: Subscription, inventory: Inventory, chain_time: int,
                       grace_seconds: int) -> str:
    observed, _ = observe(sub, inventory)
    failed = sub.attempts >= FAILED_AFTER_ATTEMPTS and bool(sub.last_error)
    return display_state(desired_state(facts_of(sub), chain_time, grace_seconds), observed, failed)


def ref_of(record: VMRecord) -> VMRef:
    assert record.subscription_id is not None
    return VMRef(vmid=record.vmid, node=record.node, name=record.name,
                 subscription_id=record.subscription_id, smbios_uuid=record.smbios_uuid)


class Reconciler:
    """Drives one subscription toward its desired state."""

    def __init__(self, services: Services, *, choose_node: Callable[[], str]) -> None:
        self.s = services
        self.choose_node = choose_node

    def reconcile(self, subscription_id: int, chain_time: int) -> str | None:
        """Take steps until converged or a step fails; return the last action taken."""
        last: str | None = None
        for _ in range(MAX_STEPS_PER_PASS):
            sub = self.s.store.subscription(subscription_id)
            if sub is None:
                return last
            observed, record = observe(sub, self.s.inventory)
            action = next_action(facts_of(sub), chain_time, self.s.config.grace_seconds, observed)
            if action is None:
                self._settle(sub, chain_time)
                return last
            self.s.store.journal_step(sub.id, action.value, "started")
            try:
                self._apply(action, sub, record)
            except (BlockhostError, ProvisionerError, AllocationError, OSError) as exc:
                reason = f"{action.value}: {exc}"[:500]
                self.s.store.journal_step(sub.id, action.value, "failed", reason)
                self.s.store.update_progress(sub.id, last_error=reason, attempts=sub.attempts + 1)
                log.warning("reconcile.step_failed", subscription=sub.id, action=action.value,
                            error=reason, attempts=sub.attempts + 1)
                return action.value
            self.s.store.journal_step(sub.id, action.value, "done")
            log.info("reconcile.step_done", subscription=sub.id, action=action.value)
            last = action.value
        return last

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
            self.s.inventory.release(record.id)

    def _allocate(self, sub: Subscription) -> None:
        self.s.store.update_progress(sub.id, state="provisioning")
        self.s.inventory.reserve(
            vm_name(self.s.config, sub.id), pools=self.s.pools, node=self.choose_node(),
            subscription_id=sub.id, owner_wallet=sub.subscriber,
            username=self.s.config.vm.username, want_ipv6=bool(self.s.pools.ipv6_prefix),
        )

    def _mint(self, sub: Subscription, record: VMRecord) -> None:
        if self.s.minter is None:
            raise BlockhostError("no NFT contract configured (chain.nft_contract); cannot mint")
        cfg = self.s.config
        user_encrypted = b""
        public_secret = cfg.public_secret_default
        note: str | None = None
        if self.s.server_key is None:
            note = "server key not loaded; NFT minted without connection details"
        elif not sub.user_encrypted:
            note = "subscription carries no userEncrypted; NFT minted without connection details"
        else:
            try:
                secret = decrypt_user_encrypted(
                    self.s.server_key, sub.user_encrypted, subscriber=sub.subscriber,
                    public_secret_default=cfg.public_secret_default)
            except CryptoError as exc:
                note = f"credentials not encrypted: {exc}"
            else:
                public_secret = secret.public_secret
                details = ConnectionDetails(hostname=record.ipv6 or record.ipv4 or record.name,
                                            port=22, username=record.username or cfg.vm.username)
                user_encrypted = encrypt_connection_details(secret.signature, details)
        request = MintRequest(
            to=sub.subscriber, user_encrypted=user_encrypted, public_secret=public_secret,
            description=cfg.nft.description, image_uri=cfg.nft.image_uri,
            animation_url_base64=signing_page_base64(cfg.nft.signing_page_path),
            expires_at=sub.expires_at,
        )
        token_id = self.s.minter.mint(f"mint:sub:{sub.id}", sub.id, request)
        self.s.store.update_progress(sub.id, token_id=token_id, nft_expires_at=sub.expires_at,
                                     credential_note=note)

    def _create(self, sub: Subscription, record: VMRecord) -> None:
        cfg = self.s.config
        size = cfg.plan_size(sub.plan_id)
        pools = self.s.pools
        user_data = render(cfg.vm.cloud_init_template, {
            "VM_NAME": record.name,
            "VM_IP": record.ipv4 or "",
            "VM_IPV6": record.ipv6 or "",
            "SIGNING_HOST": record.ipv6 or record.ipv4 or record.name,
            "USERNAME": record.username or cfg.vm.username,
            "NFT_TOKEN_ID": str(sub.token_id),
            "WALLET_ADDRESS": sub.subscriber,
            "CHAIN_ID": str(self.s.chain_id or cfg.chain.chain_id or ""),
            "NFT_CONTRACT": cfg.chain.nft_contract or "",
            "RPC_URL": self.s.rpc_url_for_vm,
            "OTP_LENGTH": "6",
            "OTP_TTL": "300",
            "SECRET_KEY": _vm_secret(),
        })
        spec = VMSpec(
            name=record.name, vmid=record.vmid, node=record.node,
            template_vmid=cfg.proxmox.template_vmid, cores=size.cores, memory_mb=size.memory,
            disk_gb=size.disk,
            ipv4_cidr=f"{record.ipv4}/{pools.ipv4_prefixlen}" if record.ipv4 else None,
            gateway4=pools.ipv4_gateway,
            ipv6_cidr=f"{record.ipv6}/128" if record.ipv6 else None,
            gateway6=pools.ipv6_gateway,
            bridge=cfg.network.bridge, pool=cfg.proxmox.pool,
            tags=(cfg.proxmox.tag, f"sub-{sub.id}"), subscription_id=sub.id,
            username=record.username or cfg.vm.username, user_data=user_data,
            storage=cfg.proxmox.storage, full_clone=cfg.proxmox.full_clone,
        )
        ref = self.s.backend.create(spec)
        self.s.inventory.set_state(record.id, "running", smbios_uuid=ref.smbios_uuid)


def _vm_secret() -> str:
    import secrets

    return secrets.token_hex(32)


def retry_delay(attempts: int) -> float:
    """Backoff between passes for a failing subscription: 2 s doubling, capped at 5 min."""
    return min(300.0, 2.0 * (2 ** max(0, attempts - 1))) if attempts else 0.0


def due(sub: Subscription, now: float, last_try: dict[int, float]) -> bool:
    return now - last_try.get(sub.id, 0.0) >= retry_delay(sub.attempts)
