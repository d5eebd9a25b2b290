"""``blockhost import-reference``: serve the reference system's VMs from where they are.

Reads the reference's ``vms.json`` (and ``public_secret`` / ``contract_address`` from its
``blockhost.yaml``), matches each VM on Proxmox (VMID and name) and on chain (subscription by
name, subscriber = the VM's wallet, NFT owned by it, purchase at or above the start block),
then, unless ``dry_run``: moves each into our pool (a refused move leaves that VM untouched),
journals those subscriptions' events, writes our ownership markers on the VMs, records them in
the inventory (VMID and addresses leased) and records their NFTs, so ``listen`` neither clones
nor mints for them. Decisions are in :mod:`listener.ops.import_plan`; nothing is done on a
malformed file.
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog
import yaml
from web3.exceptions import ContractLogicError

from listener.chain.contracts import load_abi
from listener.chain.events import EVENT_TOPICS, DecodedLog, decode_log
from listener.chain.ranges import RangeController
from listener.chain.rpc import RpcClient
from listener.chain.scanner import block_times_for
from listener.config import Config
from listener.errors import UserError
from listener.ops.import_plan import (
    ChainSide,
    Ours,
    ProxmoxSide,
    Verdict,
    judge,
    subscription_of,
)
from listener.ops.reference_vms import ReferenceVm, parse_vms_json
from listener.reconcile.progress import ProgressStore
from listener.reconcile.reconciler import Services
from listener.reconcile.recover_plan import inventory_state
from listener.reconcile.recovery import api_of, public_secret_of
from listener.reconcile.vm_builder import names_record
from listener.runtime.instance_lock import unless_listening
from listener.runtime.wiring import build_services
from provisioner.backend import deployment_tag, marker_for, subscription_tag
from provisioner.errors import PveError
from provisioner.proxmox.backend import ProxmoxAPIBackend
from provisioner.proxmox.encoders import join_tags
from provisioner.proxmox.vm_view import inspect_vm

log = structlog.get_logger(__name__)

#: The reference's static publicSecret when its blockhost.yaml names none (§4).
REFERENCE_PUBLIC_SECRET = "blockhost-access"
_SUBSCRIPTION_EVENTS = ["SubscriptionCreated", "SubscriptionExtended", "SubscriptionCancelled"]


@dataclass
class ImportReport:
    dry_run: bool
    adopted: list[dict[str, Any]] = field(default_factory=list)
    unmatched: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        verb = "would adopt" if self.dry_run else "adopted"
        out = [f"{verb} {a['name']} (vmid {a['vmid']}, {a['ipv4']}) for subscription "
               f"{a['subscription_id']}, NFT {_token_text(a['token_id'])}" for a in self.adopted]
        out += [f"not adopted: {u['name']} (vmid {u['vmid']}): {u['reason']}"
                for u in self.unmatched]
        return out or ["vms.json names no VM"]


def _token_text(token_id: int | None) -> str:
    return f"#{token_id}" if token_id is not None else "none found (none is minted either)"


def import_reference(config: Config, *, vms_json: Path, config_dir: Path, dry_run: bool,
                     from_block: int | None = None) -> ImportReport:
    """Match the reference's VMs and, unless ``dry_run``, adopt the matched ones; their
    events are read from ``from_block`` (default ``chain.start_block``) to the head."""
    vms = parse_vms_json(_read(vms_json), source=str(vms_json))
    public_secret = _reference_public_secret(config, config_dir)
    with unless_listening(config.db.path, "import-reference") as holder:
        if holder is not None:
            raise UserError(f"database {config.db.path} is in use by {holder}; stop the "
                            "listener, then run `blockhost import-reference` again")
        services = build_services(config)
        with closing(services.store):
            api = api_of(services.backend)
            if api is None or services.minter is None:
                raise UserError("import-reference needs the Proxmox API backend and "
                                "chain.nft_contract; set them in the config")
            start = config.chain.start_block if from_block is None else from_block
            verdicts = [_judge(services, api, vm) for vm in vms]
            history = _history(services, [v.subscription_id for v in verdicts
                                          if v.reason is None and v.subscription_id], start)
            verdicts = [_purchase_seen(v, history, start) for v in verdicts]
            if not dry_run:
                verdicts = [_into_pool(api, v) for v in verdicts]
                history.journal(services, {v.subscription_id for v in verdicts
                                           if v.reason is None})
            report = ImportReport(dry_run=dry_run)
            report.unmatched = [{"name": v.vm.name, "vmid": v.vm.vmid, "reason": v.reason}
                                for v in verdicts if v.reason is not None]
            for verdict in verdicts:
                if verdict.reason is None:
                    report.adopted.append(_adopt(services, api, verdict, public_secret,
                                                 dry_run))
            return report


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read --vms-json {path} ({type(exc).__name__}); pass the "
                        "reference's /var/lib/blockhost/vms.json") from None


def _reference_public_secret(config: Config, config_dir: Path) -> str:
    """The reference's publicSecret; its contract must be ours (else no subscription matches)."""
    path = config_dir / "blockhost.yaml"
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else {}
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"cannot read {path} ({type(exc).__name__}); fix it or pass "
                        "--config-dir with the reference's /etc/blockhost") from None
    document = document if isinstance(document, dict) else {}
    contract = document.get("contract_address")
    ours = config.chain.subscription_contract
    if contract and ours and str(contract).lower() != ours.lower():
        raise UserError(f"the reference's contract_address {contract} is not "
                        f"chain.subscription_contract {ours}; point the config at the "
                        "reference's contracts to take its customers over")
    secret = document.get("public_secret")
    return secret if isinstance(secret, str) and secret else REFERENCE_PUBLIC_SECRET


def _ours(services: Services) -> Ours:
    records = services.inventory.list()
    tokens = {p.token_id for p in ProgressStore(services.store.conn).all().values()
              if p.token_id is not None}
    return Ours(vmids=frozenset(r.vmid for r in records),
                addresses=frozenset(a for r in records for a in (r.ipv4, r.ipv6) if a),
                names=frozenset(r.name for r in records),
                subscriptions=frozenset(r.subscription_id for r in records
                                        if r.subscription_id is not None),
                tokens=frozenset(tokens))


def _judge(services: Services, api: ProxmoxAPIBackend, vm: ReferenceVm) -> Verdict:
    view = inspect_vm(api, vm.vmid)
    pve = (ProxmoxSide(name=view.name, node=view.node, power=str(view.entry.get("status")))
           if view is not None else None)
    sub = subscription_of(vm.name, services.config.vm.name_prefix)
    chain = _subscription(services, sub) if sub is not None else None
    owner = _token_owner(services, vm.token_id) if vm.token_id is not None else None
    return judge(vm, prefix=services.config.vm.name_prefix, pve=pve, chain=chain,
                 token_owner=owner, ours=_ours(services))


def _subscription(services: Services, subscription_id: int) -> ChainSide | None:
    assert services.minter is not None and services.config.chain.subscription_contract
    w3 = services.minter.txm.w3
    subs = w3.eth.contract(address=w3.to_checksum_address(
        services.config.chain.subscription_contract), abi=load_abi("BlockhostSubscriptions"))
    try:
        _plan, subscriber, expires_at, _active, cancelled = (
            subs.functions.getSubscription(subscription_id).call())
    except ContractLogicError:
        return None
    return ChainSide(str(subscriber), int(expires_at), bool(cancelled))


def _token_owner(services: Services, token_id: int) -> str | None:
    assert services.minter is not None
    try:
        return str(services.minter.contract.functions.ownerOf(token_id).call())
    except ContractLogicError:
        return None


def _into_pool(api: ProxmoxAPIBackend, verdict: Verdict) -> Verdict:
    """Move a matched VM into our pool first (PVE refuses a VM of another pool without
    ``allow-move``, which we never send); refused, the VM is reported and nothing of it is
    touched (no events journaled, no marker, no lease)."""
    if verdict.reason is not None:
        return verdict
    view = inspect_vm(api, verdict.vm.vmid)
    if view is None:
        return replace(verdict, reason=f"the VM at VMID {verdict.vm.vmid} vanished meanwhile")
    if view.pool == api.pool:
        return verdict
    try:
        api.request("PUT", f"pools/{api.pool}", vms=str(verdict.vm.vmid))
    except PveError as exc:
        return replace(verdict, reason=(
            f"Proxmox refused to move it into pool {api.pool} ({exc.message}); take it out "
            f"of pool {view.pool or '(none)'} or move it yourself, then run "
            "import-reference again"))
    return verdict


@dataclass
class _History:
    """The adopted subscriptions' events from the start block to the head, read before
    anything is written so a VM refused later leaves no trace in the journal."""

    events: list[DecodedLog]
    block_times: dict[int, int]
    #: the chain the RPC serves (None when no subscription was looked up)
    chain_id: int | None = None

    def purchased(self, subscription_id: int) -> bool:
        return any(e.name == "SubscriptionCreated" and e.rejected is None
                   and e.subscription_id == subscription_id for e in self.events)

    def journal(self, services: Services, subscription_ids: set[int | None]) -> None:
        """Journal the events of these subscriptions, so their facts are known although
        ``listen`` starts at the head."""
        kept = [e for e in self.events if e.subscription_id in subscription_ids]
        if kept and self.chain_id is not None:
            services.store.bind_chain(self.chain_id)
            services.store.journal_replayed(kept, block_times=self.block_times)


def _purchase_seen(verdict: Verdict, history: _History, start: int) -> Verdict:
    """A subscription whose purchase lies below ``start`` would be adopted without its facts:
    leave its VM alone and say which block to start from."""
    if verdict.reason is None and verdict.subscription_id is not None \
            and not history.purchased(verdict.subscription_id):
        return replace(verdict, reason=(
            f"the purchase of subscription {verdict.subscription_id} is not at or above "
            f"block {start}; pass a lower --from-block (0 reads the whole chain)"))
    return verdict


def _history(services: Services, subscription_ids: list[int], start: int) -> _History:
    """Every event of these subscriptions (their topic 1 is the id) from ``start`` on."""
    history = _History([], {})
    if not subscription_ids:
        return history
    chain = services.config.chain
    assert chain.subscription_contract is not None
    rpc = RpcClient(chain.rpc_urls, expected_chain_id=chain.chain_id)
    history.chain_id = rpc.chain_id()
    topics = [[EVENT_TOPICS[name] for name in _SUBSCRIPTION_EVENTS],
              ["0x" + i.to_bytes(32, "big").hex() for i in subscription_ids]]
    controller = RangeController.for_listener(chain.max_block_range)
    head = rpc.block_number()
    if start > head:
        raise UserError(f"--from-block {start} is above the chain head {head}; pass the block "
                        "of the oldest purchase the reference served, or 0")
    while start <= head:
        batch = rpc.fetch_logs(start, head, address=chain.subscription_contract, topics=topics,
                               controller=controller)
        decoded = [decode_log(e, contract=chain.subscription_contract) for e in batch.logs]
        history.events += decoded
        history.block_times.update(block_times_for(rpc, decoded, history.block_times))
        start = batch.to_block + 1
    return history


def _adopt(services: Services, api: ProxmoxAPIBackend, verdict: Verdict, public_secret: str,
           dry_run: bool) -> dict[str, Any]:
    vm, sub_id = verdict.vm, verdict.subscription_id
    assert sub_id is not None and services.minter is not None
    row: dict[str, Any] = {"name": vm.name, "vmid": vm.vmid, "ipv4": vm.ipv4,
                           "subscription_id": sub_id, "token_id": verdict.token_id}
    if dry_run:
        return row
    view = inspect_vm(api, vm.vmid)
    assert view is not None
    _mark_ours(api, vm, sub_id, view.node, view.description, view.tags)
    record = services.inventory.reserve(
        vm.name, pools=services.pools, node=view.node, subscription_id=sub_id,
        owner_wallet=verdict.wallet, username=vm.username or services.config.vm.username,
        vmid=vm.vmid, ipv4=vm.ipv4, ipv6=vm.ipv6)
    power = str(view.entry.get("status"))
    services.inventory.set_state(record.id, inventory_state(power), smbios_uuid=view.smbios_uuid)
    sub = services.store.subscription(sub_id)
    token_id = verdict.token_id
    signature = None
    if sub is not None:
        signature, _secret = public_secret_of(services, sub)
        if token_id is None:
            token_id = services.minter.existing_credential(sub_id, sub.subscriber,
                                                           public_secret)
    row["token_id"] = token_id
    if token_id is not None:
        sealed, _secret, _issued, nft_expires_at = services.minter.access_data(token_id)
        progress = ProgressStore(services.store.conn)
        before = progress.of(sub_id)
        progress.save(sub_id, before, replace(
            before, token_id=token_id, nft_expires_at=nft_expires_at,
            credentials_vm=record.id if names_record(signature, sealed, record) else None))
        progress.journal_step(sub_id, "import", "done",
                              f"adopted {vm.name} and NFT #{token_id} from the reference system")
    log.info("import_reference.adopted", name=vm.name, vmid=vm.vmid, subscription=sub_id,
             token_id=token_id)
    return row


def _mark_ours(api: ProxmoxAPIBackend, vm: ReferenceVm, sub_id: int, node: str,
               description: str, tags: tuple[str, ...]) -> None:
    """Our ownership markers on the VM: the description's first line and our tags (the
    reference's own description and tags are kept; :func:`_into_pool` did the pool)."""
    marker = marker_for(sub_id, vm.name, managed_by=api.tag, deployment=api.deployment)
    wanted = {api.tag, subscription_tag(sub_id)}
    if api.deployment is not None:
        wanted.add(deployment_tag(api.tag, api.deployment))
    api.request("PUT", f"nodes/{node}/qemu/{vm.vmid}/config",
                description="\n".join(filter(None, [marker, description])),
                tags=join_tags({*tags, *wanted}))
