"""``blockhost recover`` and the daemon's start-up repair: rebuild the database from the truth.

After a restore from an old backup (or with no database at all) the database has forgotten VMs
that run, leases they hold and NFTs already minted. This module reads Proxmox (our VMs, through
the backend's ``list_managed``) and the chain (the journal caught up to the confirmed head, the
NFT contract's mints, the signer's nonce), asks :mod:`listener.reconcile.recover_plan` what to do,
and records it: adopted VMs with their VMID and addresses leased, tokens found on chain as the
subscriptions' own. It releases nothing, and never mints, clones or stops anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import structlog

from listener.chain.journal import Subscription
from listener.chain.replay import replay
from listener.chain.scanner import confirmed_head
from listener.chain.source import ChainSource
from listener.crypto.errors import CryptoError
from listener.crypto.user_secret import decrypt_user_encrypted
from listener.reconcile.observe import subscription_state
from listener.reconcile.progress import ProgressStore, sealed_for
from listener.reconcile.reconciler import Services
from listener.reconcile.recover_plan import (
    KnownVm,
    SeenVm,
    VmPlan,
    lookups,
    needs_journal,
    parse_ipconfig,
    plan_vms,
    signer_note,
)
from listener.reconcile.vm_builder import names_record
from listener.writeback.nft import mint_key
from provisioner.backend import VMBackend, VMStatus, parse_marker
from provisioner.inventory import VMRecord
from provisioner.proxmox.backend import ProxmoxAPIBackend
from provisioner.proxmox.vm_view import inspect_vm

log = structlog.get_logger(__name__)


@dataclass
class RecoverReport:
    """What recover found and did (or, with ``dry_run``, would do)."""

    dry_run: bool
    adopted: list[dict[str, Any]] = field(default_factory=list)
    marked_built: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    missing: list[dict[str, Any]] = field(default_factory=list)
    tokens: list[dict[str, Any]] = field(default_factory=list)
    journal: dict[str, Any] | None = None
    signer: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """One line per finding, for the operator (and the daemon's log)."""
        verb = "would " if self.dry_run else ""
        out = [f"{verb}adopt {a['name']} (vmid {a['vmid']} on {a['node']}, subscription "
               f"{a['subscription_id']}, {a['ipv4']}, {a['state']})" for a in self.adopted]
        out += [f"{verb}record {m['name']} (vmid {m['vmid']}) as built ({m['state']})"
                for m in self.marked_built]
        out += [f"left alone: {s['name']} (vmid {s['vmid']}): {s['reason']}"
                for s in self.skipped]
        out += [f"not on Proxmox: {m['name']} (vmid {m['vmid']}); the listener rebuilds it "
                "while paid, or releases it after grace" for m in self.missing]
        if self.journal is not None:
            out.append(f"{verb}catch the journal up: blocks {self.journal['from_block']}.."
                       f"{self.journal['to_block']} ({self.journal.get('added', 0)} events added)")
        out += [f"{verb}record NFT #{t['token_id']} (found on chain) for subscription "
                f"{t['subscription_id']}" for t in self.tokens]
        if self.signer:
            out.append(f"signer: {self.signer}")
        return out or ["the database agrees with Proxmox and the chain: nothing to repair"]


def recover(services: Services, rpc: ChainSource | None, *, dry_run: bool,
            on_progress: Callable[[], None] = lambda: None) -> RecoverReport:
    """Compare the database with Proxmox and the chain, and repair it unless ``dry_run``;
    ``on_progress`` is called after each journaled range (the daemon feeds its watchdog)."""
    report = RecoverReport(dry_run=dry_run)
    inventory = services.inventory
    known = [known_of(r) for r in inventory.list()]
    plan = plan_vms(seen_vms(services.backend, known_vmids={k.vmid for k in known}), known)
    _report_vms(report, plan)
    if not dry_run:
        _apply_vms(services, plan)
    adopted_subs = [a.vm.subscription_id for a in plan.adopt if a.vm.subscription_id is not None]
    journaled = {sub.id for sub in services.store.subscriptions()}
    if rpc is not None and needs_journal(adopted_subs, journaled):
        report.journal = _catch_up(services, rpc, dry_run=dry_run, on_progress=on_progress)
    if services.minter is not None:
        _find_tokens(services, report, dry_run=dry_run)
        report.signer = _signer(services)
    return report


def repair_at_start(services: Services, rpc: ChainSource,
                    on_progress: Callable[[], None] = lambda: None) -> RecoverReport:
    """The daemon's start: the same repair as ``blockhost recover``, each finding logged.
    It runs before anything is allocated or minted, so nothing is handed out twice; a long
    catch-up (a lost database, an old start_block) calls ``on_progress`` per range."""
    report = recover(services, rpc, dry_run=False, on_progress=on_progress)
    for line in report.lines():
        log.info("recover.finding", detail=line)
    return report


# -- Proxmox ----------------------------------------------------------------------------------

def seen_vms(backend: VMBackend, *, known_vmids: set[int] | None = None) -> list[SeenVm]:
    """Our VMs as Proxmox shows them (markers parsed by the backend's own parser); addresses
    are read (one config call each) only for VMs at a VMID the database does not hold."""
    api = api_of(backend)
    out: list[SeenVm] = []
    for status in backend.list_managed():
        marker = parse_marker(status.description)
        if marker is None:
            continue
        v4, v6 = ((None, None) if known_vmids is not None and status.vmid in known_vmids
                  else _addresses(api, status))
        out.append(SeenVm(vmid=status.vmid, node=status.node, name=status.name,
                          subscription_id=marker.subscription_id, power=status.power,
                          ipv4=v4, ipv6=v6, smbios_uuid=status.smbios_uuid))
    return out


def api_of(backend: VMBackend) -> ProxmoxAPIBackend | None:
    """The API client that reads a VM's config (the Terraform backend keeps one too)."""
    if isinstance(backend, ProxmoxAPIBackend):
        return backend
    api = getattr(backend, "api", None)
    return api if isinstance(api, ProxmoxAPIBackend) else None


def _addresses(api: ProxmoxAPIBackend | None, status: VMStatus) -> tuple[str | None, str | None]:
    if api is None:
        return None, None
    view = inspect_vm(api, status.vmid)
    return parse_ipconfig(view.text("ipconfig0")) if view is not None else (None, None)


def known_of(record: VMRecord) -> KnownVm:
    return KnownVm(id=record.id, vmid=record.vmid, name=record.name,
                   subscription_id=record.subscription_id, state=record.state,
                   ipv4=record.ipv4, ipv6=record.ipv6)


def _report_vms(report: RecoverReport, plan: VmPlan) -> None:
    report.adopted = [{"name": a.vm.name, "vmid": a.vm.vmid, "node": a.vm.node,
                       "subscription_id": a.vm.subscription_id, "ipv4": a.vm.ipv4,
                       "ipv6": a.vm.ipv6, "state": a.state} for a in plan.adopt]
    report.marked_built = [{"name": m.vm.name, "vmid": m.vm.vmid, "state": m.state}
                           for m in plan.mark_built]
    report.skipped = [asdict(s) for s in plan.skipped]
    report.missing = [{"name": m.name, "vmid": m.vmid, "state": m.state} for m in plan.missing]


def _apply_vms(services: Services, plan: VmPlan) -> None:
    """Record adopted VMs (leases taken with the record, atomically) and built ones."""
    inventory = services.inventory
    conn = services.store.conn
    for adopt in plan.adopt:
        vm = adopt.vm
        # Its markers prove it ours: a VMID quarantined as foreign by a forgetful database
        # is ours again.
        conn.execute("DELETE FROM foreign_vmids WHERE vmid = ?", (vm.vmid,))
        sub = (services.store.subscription(vm.subscription_id)
               if vm.subscription_id is not None else None)
        record = inventory.reserve(
            vm.name, pools=services.pools, node=vm.node, subscription_id=vm.subscription_id,
            owner_wallet=sub.subscriber if sub is not None else None,
            username=services.config.vm.username, vmid=vm.vmid, ipv4=vm.ipv4, ipv6=vm.ipv6)
        inventory.set_state(record.id, adopt.state, smbios_uuid=vm.smbios_uuid)
        log.info("recover.adopted", name=vm.name, vmid=vm.vmid, subscription=vm.subscription_id)
    for built in plan.mark_built:
        inventory.set_state(built.record_id, built.state, smbios_uuid=built.vm.smbios_uuid)
        log.info("recover.marked_built", name=built.vm.name, vmid=built.vm.vmid)


# -- chain ------------------------------------------------------------------------------------

def _catch_up(services: Services, rpc: ChainSource, *, dry_run: bool,
              on_progress: Callable[[], None]) -> dict[str, Any]:
    """Journal the confirmed blocks above the cursor (the scanner finds them already there),
    so the adopted VMs' subscriptions are known before their NFTs are looked up."""
    chain = services.config.chain
    state = services.store.chain_state()
    first = chain.start_block if state.applied_block is None else state.applied_block + 1
    last = confirmed_head(rpc, chain.confirmations, rpc.block_number())
    out: dict[str, Any] = {"from_block": first, "to_block": last}
    if last >= first and chain.subscription_contract and not dry_run:
        out["added"] = replay(rpc, services.store, chain, first, last, dry_run=False,
                              on_progress=lambda _start, _end: on_progress()).added
    return out


def public_secret_of(services: Services, sub: Subscription) -> tuple[bytes | None, str]:
    """(signature, publicSecret) of a purchase, as the reconciler's mint read them."""
    default = services.config.public_secret_default
    if services.server_key is None or not sub.user_encrypted:
        return None, default
    try:
        secret = decrypt_user_encrypted(services.server_key, sub.user_encrypted,
                                        subscriber=sub.subscriber,
                                        public_secret_default=default)
    except CryptoError:
        return None, default
    return secret.signature, secret.public_secret


def _find_tokens(services: Services, report: RecoverReport, *, dry_run: bool) -> None:
    """Record, as the subscription's own, an NFT already minted for it on chain."""
    minter = services.minter
    assert minter is not None
    progress = ProgressStore(services.store.conn)
    every = progress.all()
    live = {r.subscription_id: r.id for r in services.inventory.list()
            if r.subscription_id is not None}
    chain_time = services.store.chain_state().chain_time
    for need in lookups({sub: p.token_id for sub, p in every.items()}, live):
        sub = services.store.subscription(need.subscription_id)
        record = services.inventory.get_by_id(need.record_id)
        if sub is None or record is None or minter.txm.store.get(mint_key(sub.id)) is not None:
            continue  # a stored mint request is settled by the transaction manager
        signature, public_secret = public_secret_of(services, sub)
        token_id = minter.existing_credential(sub.id, sub.subscriber, public_secret)
        if token_id is None:
            continue
        sealed, _secret, _issued, nft_expires_at = minter.access_data(token_id)
        report.tokens.append({"subscription_id": sub.id, "token_id": token_id,
                              "nft_expires_at": nft_expires_at})
        if dry_run:
            continue
        before = every[sub.id]
        after = replace(before, token_id=token_id, nft_expires_at=nft_expires_at,
                        credentials_vm=sealed_for(
                            record.id, names_it=names_record(signature, sealed, record),
                            can_seal=signature is not None))
        if chain_time is not None:
            after = replace(after, state=subscription_state(
                sub, after, services.inventory, chain_time, services.config.grace_seconds))
        progress.save(sub.id, before, after)
        progress.journal_step(sub.id, "mint", "done", f"recovered: NFT #{token_id} found on chain")
        log.info("recover.token_found", subscription=sub.id, token_id=token_id)


def _signer(services: Services) -> str:
    minter = services.minter
    assert minter is not None
    txm = minter.txm
    stored = txm.store.stored_nonces(txm.sender)
    return signer_note(txm.chain.nonce("latest"), max(stored) if stored else None,
                       len(txm.store.open_requests(txm.sender)))
