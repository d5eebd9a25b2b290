"""The steps every new VM takes, whoever asked for it: seal the connection details, mint the
NFT, render cloud-init, create through the backend, run the network hooks, mark it running.

The daemon's reconciler (a subscription paid on chain) and ``blockhost vm create`` (an operator's
VM) both build through :class:`VmBuilder`, so a VM is made one way only. Each step is idempotent
on its own (the minter is keyed, the backend adopts its own clone, hooks must be idempotent), so
either caller can resume after a crash at any line.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from listener.config import Config
from listener.crypto.credentials import (
    ConnectionDetails,
    decrypt_connection_details,
    encrypt_connection_details,
)
from listener.crypto.errors import CryptoError
from listener.errors import UserError
from listener.reconcile.minter import Minter
from listener.reconcile.observe import vm_facts
from listener.reconcile.vm_spec import cloud_init_variables
from listener.writeback.nft import MintRequest, NftMinter, signing_page_base64
from provisioner.backend import VMBackend, VMRef, VMSpec
from provisioner.cloudinit import render
from provisioner.errors import VmidTaken
from provisioner.inventory import Inventory, Pools, VMRecord
from provisioner.network_hooks import run_hooks
from provisioner.placement import PlacementLimiter

log = structlog.get_logger(__name__)

#: Every VM is reached over SSH on the standard port.
SSH_PORT = 22


class Deferred(Exception):
    """A step that cannot start now (e.g. the node's create slots are full): not a failure,
    the next pass tries again."""


@dataclass(frozen=True)
class MintOrder:
    """What one NFT carries; ``signature`` (the owner's, never stored) seals the details."""

    key: str
    subscription_id: int | None
    to: str
    signature: bytes | None
    public_secret: str
    username: str
    expires_at: int


def seal_details(signature: bytes, record: VMRecord, username: str) -> bytes:
    """The NFT's ``userEncrypted``: where to log in, readable only with the owner's signature."""
    details = ConnectionDetails(hostname=record.ipv6 or record.ipv4 or record.name,
                                port=SSH_PORT, username=username)
    return encrypt_connection_details(signature, details)


def names_record(signature: bytes | None, sealed: bytes, record: VMRecord) -> bool:
    """Do the sealed details of an NFT found on chain point at ``record``'s address?"""
    if signature is None or not sealed:
        return False
    try:
        details = decrypt_connection_details(signature, sealed)
    except CryptoError:
        return False
    return details.hostname == (record.ipv6 or record.ipv4 or record.name)


class VmBuilder:
    """Mint, create, hook, mark running; the adapters are injected by the caller's wiring."""

    def __init__(self, config: Config, inventory: Inventory, pools: Pools, *,
                 backend: VMBackend | None, minter: Minter | None, chain_id: int | None,
                 rpc_url_for_vm: str, limiter: PlacementLimiter | None = None) -> None:
        self.config = config
        self.inventory = inventory
        self.pools = pools
        self.backend = backend
        self.minter = minter
        self.chain_id = chain_id
        self.rpc_url_for_vm = rpc_url_for_vm
        self.limiter = limiter

    def require_minter(self, hint: str) -> Minter:
        if self.minter is None:
            raise UserError(f"chain.nft_contract is not set, so no NFT can be minted; {hint}")
        return self.minter

    def mint(self, order: MintOrder, record: VMRecord, *, hint: str = "set it"
             ) -> tuple[int, bool]:
        """Mint (or resume the keyed mint of) the NFT for ``record``: (token id, sealed?)."""
        minter = self.require_minter(hint)
        found = self._already_minted(minter, order, record)
        if found is not None:
            return found
        sealed = b""
        if order.signature is not None:
            sealed = seal_details(order.signature, record, order.username)
        cfg = self.config
        request = MintRequest(
            to=order.to, user_encrypted=sealed, public_secret=order.public_secret,
            description=cfg.nft.description, image_uri=cfg.nft.image_uri,
            animation_url_base64=signing_page_base64(cfg.nft.signing_page_path),
            expires_at=order.expires_at)
        return minter.mint(order.key, order.subscription_id, request), bool(sealed)

    @staticmethod
    def _already_minted(minter: Minter, order: MintOrder, record: VMRecord
                        ) -> tuple[int, bool] | None:
        """A mint is only sent after the chain was checked: a subscription whose key has no
        stored request (a restored or lost database) may already hold its NFT. Found, it is
        ours: (token id, do its sealed details name this VM?)."""
        if (order.subscription_id is None or not isinstance(minter, NftMinter)
                or minter.txm.store.get(order.key) is not None):
            return None
        token_id = minter.existing_credential(order.subscription_id, order.to,
                                              order.public_secret)
        if token_id is None:
            return None
        sealed = minter.access_data(token_id)[0]
        log.info("mint.found_on_chain", subscription=order.subscription_id, token_id=token_id)
        return token_id, names_record(order.signature, sealed, record)

    def user_data(self, template: str, record: VMRecord, *, token_id: int | None,
                  wallet: str) -> str:
        """Cloud-init user-data for ``record`` (raises TemplateError on a missing value)."""
        return render(template, cloud_init_variables(
            self.config, record, token_id=token_id, wallet=wallet,
            chain_id=self.chain_id or self.config.chain.chain_id, rpc_url=self.rpc_url_for_vm))

    def create(self, spec: VMSpec, record: VMRecord) -> VMRef:
        """Create (or adopt our own) VM, run the create hooks, then mark it running.

        Hooks run before the record says "running": if one fails, the next pass creates again
        (adopting the VM) and re-runs them, so hooks must be idempotent."""
        if self.backend is None:
            raise UserError("no Proxmox backend configured")
        if self.limiter is not None and not self.limiter.try_acquire_node(record.node):
            raise Deferred(f"node {record.node} has no free create slot")
        try:
            ref = self.backend.create(spec)
        finally:
            if self.limiter is not None:
                self.limiter.release(record.node)
        hooks = self.config.network.hooks
        run_hooks(hooks.on_create, "created", vm_facts(self.config, record),
                  timeout=hooks.timeout)
        self.inventory.set_state(record.id, "running", smbios_uuid=ref.smbios_uuid)
        return ref

    def move_off_taken_vmid(self, record: VMRecord, exc: VmidTaken) -> VMRecord:
        """Someone else's VM sits on our id: quarantine it and take the next free one."""
        return self.inventory.reassign_vmid(record.id, self.pools, reason=str(exc))
