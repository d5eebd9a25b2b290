"""``blockhost vm create``: the seed's vm-generator on our inventory, backends and
transaction manager.

A VM made by hand serves no subscription: its markers say ``sub=manual`` and its request
(sizes, template, tags, expiry; never the owner's signature) is stored with the inventory
record in the same transaction that reserves its ids. Every step is idempotent, so running
the same command again after a crash resumes the same VM and the same mint:

    reserve ids -> mint the NFT (token id for cloud-init) -> create through the backend
    -> network hooks -> "running"

Without ``--apply`` nothing is written: the result line shows what would be allocated.
"""

from __future__ import annotations

import ipaddress
import json
import re
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed
from web3 import Web3

from listener.config import Config, PlanSize
from listener.crypto.core import (
    ConnectionDetails,
    CryptoError,
    encrypt_connection_details,
    recover_personal_sign,
)
from listener.errors import UserError
from listener.writeback.nft import MintRequest, NftMinter, signing_page_base64
from listener.reconcile.reconciler import vm_facts
from listener.reconcile.vm_spec import cloud_init_variables, vm_spec
from provisioner.backend import NAME_RE, TAG_RE, VMBackend, VMRef, VMSpec
from provisioner.cloudinit import TemplateError, find_template, render
from provisioner.errors import Locked, VmidTaken
from provisioner.inventory import AllocationError, Inventory, ManualRequest, Pools, VMRecord
from provisioner.network_hooks import run_hooks

#: The seed's name rule, narrowed to what PVE accepts as a VM name (a DNS name).
_SEED_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]*\Z")
_USERNAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}\Z")
_SIGNATURE = re.compile(r"^0x[0-9a-fA-F]{130}\Z")
DAY = 86_400
MAX_VMID_REASSIGNMENTS = 10
_ALLOCATION_HINT = ("; leave out --vmid/--ip/--ipv6 to take the next free one, or see "
                    "`blockhost vm list`")


@dataclass(frozen=True)
class CreateRequest:
    """What the operator asked for; stored (as JSON) with the VM so a rerun resumes it."""

    name: str
    owner_wallet: str
    cores: int
    memory_mb: int
    disk_gb: int
    template_vmid: int
    username: str
    cloud_init: str
    expiry_days: int
    tags: tuple[str, ...] = ()
    skip_mint: bool = False
    public_secret: str = ""
    nft_token_id: int | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> CreateRequest:
        data = json.loads(text)
        data["tags"] = tuple(data.get("tags") or ())
        return cls(**data)


@dataclass(frozen=True)
class Placement:
    """Where the VM goes: explicit values from the flags, the rest from the pools."""

    node: str | None = None
    vmid: int | None = None
    ipv4: str | None = None
    ipv6: str | None = None


@dataclass
class CreateResult:
    """The one JSON line on stdout (the daemon-era consumers parse the last ``{`` line)."""

    status: str  # "planned" | "created"
    name: str
    vmid: int
    node: str
    ipv4: str | None
    ipv6: str | None
    username: str
    owner_wallet: str
    expires_at: int
    nft: str  # "minted" | "skipped" | "would mint" | "would skip"
    token_id: int | None = None
    mock: bool = False
    notes: list[str] = field(default_factory=list)

    def to_json_line(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def validate(request: CreateRequest, placement: Placement, *, signature_hex: str | None) -> None:
    """Every flag a user can get wrong, checked before anything is touched (one line each)."""
    if not _SEED_NAME.match(request.name) or not NAME_RE.match(request.name) \
            or len(request.name) > 63:
        raise UserError(f"VM name {request.name!r} is not valid: letters, digits and '-' "
                        "(dot-separated labels), at most 63 characters")
    if not Web3.is_address(request.owner_wallet):
        raise UserError(f"--owner-wallet {request.owner_wallet!r} is not an address "
                        "(0x + 40 hex digits)")
    for flag, value, low in (("--cpu", request.cores, 1), ("--memory", request.memory_mb, 64),
                             ("--disk", request.disk_gb, 1), ("--expiry-days",
                                                              request.expiry_days, 1)):
        if value < low:
            raise UserError(f"{flag} must be at least {low} (got {value})")
    if request.template_vmid < 100:
        raise UserError(f"--template-vmid must be a VMID >= 100 (got {request.template_vmid})")
    if not _USERNAME.match(request.username):
        raise UserError(f"--username {request.username!r} is not a Linux user name "
                        "(lower-case letter or '_', then up to 31 of [a-z0-9_-])")
    for tag in request.tags:
        if not TAG_RE.match(tag) or tag.startswith("sub-") or tag == "manual":
            raise UserError(f"--tags {tag!r} is not a usable Proxmox tag (letters, digits, "
                            "'_', '-', '+', '.'; 'sub-*' and 'manual' are reserved)")
    try:
        find_template(request.cloud_init)
    except TemplateError as exc:
        raise UserError(f"--cloud-init: {exc}") from None
    if placement.ipv4 is not None:
        _check_ip(placement.ipv4, 4, "--ip")
    if placement.ipv6 is not None:
        _check_ip(placement.ipv6, 6, "--ipv6")
    if placement.vmid is not None and placement.vmid < 100:
        raise UserError(f"--vmid must be >= 100 (got {placement.vmid})")
    if request.nft_token_id is not None and not request.skip_mint:
        raise UserError("--nft-token-id names an NFT minted elsewhere; it needs --skip-mint")
    if signature_hex is not None:
        if request.skip_mint:
            raise UserError("--user-signature seals the details into the NFT; it cannot be "
                            "used with --skip-mint")
        if not _SIGNATURE.match(signature_hex):
            raise UserError("--user-signature must be 0x followed by 130 hex digits (a 65-byte "
                            "personal_sign signature)")
        try:
            signer = recover_personal_sign(request.public_secret, bytes.fromhex(signature_hex[2:]))
        except CryptoError as exc:
            raise UserError(f"--user-signature is not usable: {exc}") from None
        if signer.lower() != request.owner_wallet.lower():
            raise UserError(f"--user-signature was made by {signer}, not by --owner-wallet "
                            f"{request.owner_wallet} over --public-secret "
                            f"{request.public_secret!r}; the owner could never decrypt the "
                            "details")


def _check_ip(text: str, version: int, flag: str) -> None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise UserError(f"{flag} {text!r} is not an IP address") from None
    if address.version != version:
        raise UserError(f"{flag} {text!r} is not an IPv{version} address")


class ManualVmCreator:
    """Runs one `vm create`; the adapters are injected (see :mod:`listener.runtime.wiring`)."""

    def __init__(self, config: Config, inventory: Inventory, pools: Pools, *,
                 backend: VMBackend | None, minter: NftMinter | None,
                 chain_id: int | None, choose_node: Any, clock: Any = time.time) -> None:
        self.config = config
        self.inventory = inventory
        self.pools = pools
        self.backend = backend
        self.minter = minter
        self.chain_id = chain_id
        self.choose_node = choose_node  # (PlanSize) -> node name
        self.clock = clock
        #: Our own clone still running after a crash: wait this long for it, polling.
        self.locked_wait = 2.0
        self.locked_timeout = 300.0

    # -- dry run ---------------------------------------------------------------------------

    def plan(self, request: CreateRequest, placement: Placement) -> CreateResult:
        """What ``--apply`` would allocate now (nothing is reserved)."""
        existing = self.inventory.get(request.name)
        if existing is not None:
            raise UserError(f"a live VM named {request.name} already exists (vmid "
                            f"{existing.vmid}); see `blockhost vm list`")
        try:
            vmid, ipv4, ipv6 = self.inventory.peek(
                self.pools, vmid=placement.vmid, ipv4=placement.ipv4, ipv6=placement.ipv6,
                want_ipv6=bool(self.pools.ipv6_prefix))
        except AllocationError as exc:
            raise UserError(f"cannot allocate: {exc}{_ALLOCATION_HINT}") from None
        nodes = self.config.proxmox.nodes
        node = placement.node or (nodes[0] if len(nodes) == 1 else "(placed at --apply)")
        return CreateResult(
            status="planned", name=request.name, vmid=vmid, node=node, ipv4=ipv4, ipv6=ipv6,
            username=request.username, owner_wallet=request.owner_wallet,
            expires_at=int(self.clock()) + request.expiry_days * DAY,
            nft="would skip" if request.skip_mint else "would mint",
            token_id=request.nft_token_id)

    # -- apply -----------------------------------------------------------------------------

    def apply(self, request: CreateRequest, placement: Placement, *,
              signature: bytes | None) -> CreateResult:
        """Reserve, mint, create, hook, mark running: each step idempotent (rerun = resume)."""
        record, request, notes = self._reserve_or_resume(request, placement)
        manual = self.inventory.manual(record.id)
        assert manual is not None
        token_id = manual.token_id if manual.token_id is not None else request.nft_token_id
        if record.state == "running" and (request.skip_mint or manual.token_id is not None):
            raise UserError(f"VM {request.name} already exists (vmid {record.vmid}, "
                            f"{record.state}); see `blockhost vm list`")
        if not request.skip_mint and manual.token_id is None:
            token_id = self._mint(record, request, manual.expires_at, signature)
            self.inventory.set_manual_token(record.id, token_id)
        if record.state != "running":
            self._create(record, request, token_id, explicit_vmid=placement.vmid is not None)
        current = self.inventory.get_by_id(record.id)
        assert current is not None
        return CreateResult(
            status="created", name=current.name, vmid=current.vmid, node=current.node,
            ipv4=current.ipv4, ipv6=current.ipv6, username=request.username,
            owner_wallet=request.owner_wallet, expires_at=manual.expires_at,
            nft="skipped" if request.skip_mint else "minted", token_id=token_id, notes=notes)

    def _reserve_or_resume(self, request: CreateRequest, placement: Placement
                           ) -> tuple[VMRecord, CreateRequest, list[str]]:
        existing = self.inventory.get(request.name)
        if existing is None:
            size = PlanSize(cores=request.cores, memory=request.memory_mb, disk=request.disk_gb)
            node = placement.node or self.choose_node(size)
            try:
                record = self.inventory.reserve(
                    request.name, pools=self.pools, node=node, subscription_id=None,
                    owner_wallet=Web3.to_checksum_address(request.owner_wallet),
                    username=request.username, vmid=placement.vmid, ipv4=placement.ipv4,
                    ipv6=placement.ipv6, want_ipv6=bool(self.pools.ipv6_prefix),
                    manual=ManualRequest(request.to_json(),
                                         int(self.clock()) + request.expiry_days * DAY))
            except AllocationError as exc:
                raise UserError(f"cannot allocate: {exc}{_ALLOCATION_HINT}") from None
            return record, request, []
        if existing.subscription_id is not None:
            raise UserError(f"VM name {request.name} belongs to subscription "
                            f"#{existing.subscription_id}; pick another name")
        manual = self.inventory.manual(existing.id)
        if manual is None or (existing.owner_wallet or "").lower() != \
                request.owner_wallet.lower():
            raise UserError(f"a VM named {request.name} already exists for another owner; "
                            "pick another name (see `blockhost vm list`)")
        stored = CreateRequest.from_json(manual.request)
        notes = []
        if stored != request:
            notes.append("resumed with the request stored by the first run; flags of this run "
                         "that differ were ignored")
        return existing, stored, notes

    def _mint(self, record: VMRecord, request: CreateRequest, expires_at: int,
              signature: bytes | None) -> int:
        if self.minter is None:
            raise UserError("chain.nft_contract is not set, so no NFT can be minted; set it or "
                            "pass --skip-mint")
        user_encrypted = b""
        if signature is not None:
            details = ConnectionDetails(hostname=record.ipv6 or record.ipv4 or record.name,
                                        port=22, username=request.username)
            user_encrypted = encrypt_connection_details(signature, details)
        cfg = self.config
        mint = MintRequest(
            to=Web3.to_checksum_address(request.owner_wallet), user_encrypted=user_encrypted,
            public_secret=request.public_secret, description=cfg.nft.description,
            image_uri=cfg.nft.image_uri,
            animation_url_base64=signing_page_base64(cfg.nft.signing_page_path),
            expires_at=expires_at)
        # Keyed by the inventory record: a crash after signing resumes this very transaction
        # (even though a rerun seals the details with a fresh nonce), and a later VM that
        # reuses the name gets its own mint.
        return self.minter.mint(manual_vm_mint_key(record), None, mint)

    def _create(self, record: VMRecord, request: CreateRequest, token_id: int | None, *,
                explicit_vmid: bool) -> None:
        if self.backend is None:
            raise UserError("no Proxmox backend configured")
        cfg = self.config
        variables = cloud_init_variables(
            cfg, record, token_id=token_id, wallet=request.owner_wallet,
            chain_id=self.chain_id or cfg.chain.chain_id,
            rpc_url=cfg.chain.rpc_urls[0] if cfg.chain.rpc_urls else "")
        try:
            user_data = render(request.cloud_init, variables)
        except TemplateError as exc:
            raise UserError(f"cloud-init template {request.cloud_init}: {exc}; pass the "
                            "missing value (e.g. --nft-token-id with --skip-mint) or choose "
                            "another --cloud-init") from None
        size = PlanSize(cores=request.cores, memory=request.memory_mb, disk=request.disk_gb)
        spec = vm_spec(cfg, record, self.pools, size=size, user_data=user_data,
                       template_vmid=request.template_vmid, extra_tags=request.tags)
        ref, record = self._create_on_proxmox(spec, record, explicit_vmid=explicit_vmid)
        hooks = cfg.network.hooks
        run_hooks(hooks.on_create, "created", vm_facts(cfg, record), timeout=hooks.timeout)
        self.inventory.set_state(record.id, "running", smbios_uuid=ref.smbios_uuid)


    def _create_on_proxmox(self, spec: VMSpec, record: VMRecord, *,
                           explicit_vmid: bool) -> tuple[VMRef, VMRecord]:
        """Create (or adopt) the VM. Our own clone still running after a crash is waited
        for; a VMID someone else took behind our back is quarantined and the next one used
        (unless the operator asked for that exact id)."""
        assert self.backend is not None
        for _ in range(MAX_VMID_REASSIGNMENTS):
            try:
                return self._create_waiting(spec), record
            except VmidTaken as exc:
                if explicit_vmid:
                    manual = self.inventory.manual(record.id)
                    if manual is not None and manual.token_id is None:
                        self.inventory.release(record.id)  # nothing built, nothing minted
                        kept = "nothing was kept"
                    else:
                        kept = (f"the reservation is kept for the minted NFT; `blockhost vm "
                                f"destroy {record.name} --execute` releases it")
                    raise UserError(f"--vmid {record.vmid} is taken on Proxmox by a VM that is "
                                    f"not ours ({exc}); {kept}; choose another --vmid") from None
                record = self.inventory.reassign_vmid(record.id, self.pools, reason=str(exc))
                spec = replace(spec, vmid=record.vmid)
        raise UserError(f"{MAX_VMID_REASSIGNMENTS} VMIDs in a row were taken by foreign VMs; "
                        "check network.vmid_range against the cluster")

    def _create_waiting(self, spec: VMSpec) -> VMRef:
        assert self.backend is not None
        retrying = Retrying(retry=retry_if_exception_type(Locked), reraise=True,
                            wait=wait_fixed(self.locked_wait), stop=stop_after_delay(
                                self.locked_timeout))
        return retrying(self.backend.create, spec)


def manual_vm_mint_key(record: VMRecord) -> str:
    return f"mint:vm:{record.id}:{record.name}"
