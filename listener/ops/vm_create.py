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
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed
from web3 import Web3

from listener.chain.deployment import check_database, deployment_of
from listener.chain.journal import Store
from listener.config import Config, PlanSize
from listener.crypto.errors import CryptoError
from listener.crypto.user_secret import recover_personal_sign
from listener.errors import UserError
from listener.ops.snippet_placement import limit_placement_to_snippet_readers
from listener.reconcile.placement import place_on
from listener.reconcile.vm_builder import MintOrder, VmBuilder
from listener.reconcile.vm_spec import vm_spec
from listener.runtime.wiring import build_backend, build_minter, pools_from_config, rpc_url_for_vm
from provisioner.backend import NAME_RE, TAG_RE, VMRef, VMSpec
from provisioner.cloudinit import TemplateError, find_template
from provisioner.errors import Locked, VmidTaken
from provisioner.inventory import AllocationError, Inventory, ManualRequest, VMRecord

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
    """Runs one `vm create` through the same :class:`VmBuilder` steps as the daemon; the
    adapters are injected (see :mod:`listener.runtime.wiring`)."""

    def __init__(self, builder: VmBuilder, *,
                 choose_node: Callable[[PlanSize], str] | None,
                 clock: Callable[[], float] = time.time) -> None:
        self.builder = builder
        self.config: Config = builder.config
        self.inventory = builder.inventory
        self.pools = builder.pools
        self.choose_node = choose_node
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
            node = placement.node
            if node is None:
                if self.choose_node is None:
                    raise UserError("no node to place the VM on; pass --node")
                node = self.choose_node(size)
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
        # Keyed by the inventory record: a crash after signing resumes this very transaction
        # (even though a rerun seals the details with a fresh nonce), and a later VM that
        # reuses the name gets its own mint.
        order = MintOrder(key=manual_vm_mint_key(record), subscription_id=None,
                          to=Web3.to_checksum_address(request.owner_wallet), signature=signature,
                          public_secret=request.public_secret, username=request.username,
                          expires_at=expires_at)
        token_id, _sealed = self.builder.mint(order, record, hint="set it or pass --skip-mint")
        return token_id

    def _create(self, record: VMRecord, request: CreateRequest, token_id: int | None, *,
                explicit_vmid: bool) -> None:
        if self.builder.backend is None:
            raise UserError("no Proxmox backend configured")
        try:
            user_data = self.builder.user_data(request.cloud_init, record, token_id=token_id,
                                               wallet=request.owner_wallet)
        except TemplateError as exc:
            raise UserError(f"cloud-init template {request.cloud_init}: {exc}; pass the "
                            "missing value (e.g. --nft-token-id with --skip-mint) or choose "
                            "another --cloud-init") from None
        size = PlanSize(cores=request.cores, memory=request.memory_mb, disk=request.disk_gb)
        spec = vm_spec(self.config, record, self.pools, size=size, user_data=user_data,
                       template_vmid=request.template_vmid, extra_tags=request.tags)
        self._create_on_proxmox(spec, record, explicit_vmid=explicit_vmid)

    def _create_on_proxmox(self, spec: VMSpec, record: VMRecord, *,
                           explicit_vmid: bool) -> VMRef:
        """Create (or adopt) the VM, hooks and "running" included. Our own clone still running
        after a crash is waited for; a VMID someone else took behind our back is quarantined
        and the next one used (unless the operator asked for that exact id)."""
        for _ in range(MAX_VMID_REASSIGNMENTS):
            try:
                return self._create_waiting(spec, record)
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
                record = self.builder.move_off_taken_vmid(record, exc)
                spec = replace(spec, vmid=record.vmid)
        raise UserError(f"{MAX_VMID_REASSIGNMENTS} VMIDs in a row were taken by foreign VMs; "
                        "check network.vmid_range against the cluster")

    def _create_waiting(self, spec: VMSpec, record: VMRecord) -> VMRef:
        retrying = Retrying(retry=retry_if_exception_type(Locked), reraise=True,
                            wait=wait_fixed(self.locked_wait), stop=stop_after_delay(
                                self.locked_timeout))
        return retrying(self.builder.create, spec, record)


def manual_vm_mint_key(record: VMRecord) -> str:
    return f"mint:vm:{record.id}:{record.name}"


def _open_store(config: Config, path: Path) -> Store:
    """The database at ``path``, refused (one line) when its header names another deployment,
    as every other command's ``open_database`` does; a missing one is created."""
    store = Store.open(path)
    ours = deployment_of(config, conn=store.conn)
    try:
        if ours is not None:
            check_database(store.conn, ours, path)
    except UserError:
        store.close()
        raise
    return store


def plan_vm(config: Config, request: CreateRequest, placement: Placement, *,
            mock: bool) -> CreateResult:
    """``vm create`` without ``--apply``: what would be allocated; nothing is written to the
    real database (a missing one, or ``mock``, means nothing is allocated yet)."""
    with tempfile.TemporaryDirectory(prefix="blockhost-mock-") as scratch:
        fresh = mock or not config.db.path.exists()
        store = _open_store(config, Path(scratch) / "mock.db" if fresh else config.db.path)
        try:
            builder = VmBuilder(config, Inventory(store.conn), pools_from_config(config),
                                backend=None, minter=None, chain_id=None, rpc_url_for_vm="")
            result = ManualVmCreator(builder, choose_node=None).plan(request, placement)
        finally:
            store.close()
    result.mock = mock
    return result


def create_vm(config: Config, request: CreateRequest, placement: Placement, *,
              signature: bytes | None) -> CreateResult:
    """``vm create --apply``: reserve, mint, create, hook, mark running (a rerun resumes)."""
    if placement.node is None:  # placement may pick any node: only those that read snippets
        config = limit_placement_to_snippet_readers(config)
    backend = build_backend(config)
    store = _open_store(config, config.db.path)
    try:
        minter = None if request.skip_mint else build_minter(config, store)
        chain_id = config.chain.chain_id
        if minter is not None and chain_id is None:
            chain_id = int(minter.txm.w3.eth.chain_id)
        builder = VmBuilder(config, Inventory(store.conn), pools_from_config(config),
                            backend=backend, minter=minter, chain_id=chain_id,
                            rpc_url_for_vm=rpc_url_for_vm(config))
        creator = ManualVmCreator(builder,
                                  choose_node=lambda size: place_on(config, backend, size))
        return creator.apply(request, placement, signature=signature)
    finally:
        store.close()
