"""VMBackend over the Proxmox VE HTTP API: the VM lifecycle (create, start, stop, destroy,
status, list) on top of :class:`provisioner.proxmox.client.PveClient`.

Nothing is started, stopped or destroyed before its ownership markers are verified
(:mod:`provisioner.proxmox.ownership`); creating is the resumable state machine of
:mod:`provisioner.proxmox.create_machine`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import structlog

from provisioner.backend import TAG_RE, VMRef, VMSpec, VMStatus
from provisioner.errors import Locked, NotFound, TaskFailed, Transient
from provisioner.inventory import Occupied
from provisioner.proxmox.client import ClusterResource, Param, PveClient
from provisioner.proxmox.clone_journal import CloneJournal, Journal, MemoryCloneJournal
from provisioner.proxmox.create_machine import CreateMachine, ensure_running
from provisioner.proxmox.encoders import join_tags, split_tags
from provisioner.proxmox.ownership import OwnershipRules
from provisioner.proxmox.snippets import SnippetStore
from provisioner.proxmox.vm_view import VMView, inspect_vm, occupied_by_others, power_of, view_of

log = structlog.get_logger(__name__)


class ProxmoxAPIBackend(PveClient):
    """:class:`provisioner.backend.VMBackend` over the PVE API via proxmoxer."""

    def __init__(
        self,
        api_url: str,
        token_id: str,
        token_secret: str,
        *,
        verify: bool | str = True,
        pool: str,
        tag: str = "blockhost",
        snippets_dir: Path | None = None,
        snippets_storage: str = "local",
        task_timeout: float = 600,
        poll_interval: float = 0.2,
        timeout: float = 30,
        journal_dir: Path | None = None,
        deployment: str | None = None,
    ) -> None:
        """``journal_dir`` (recommended in production, e.g. ``<state dir>/clones``) keeps the
        clones in flight across a crash, so a restart waits for and adopts its own half-made
        VM instead of mistaking it for a foreign one."""
        super().__init__(api_url, token_id, token_secret, verify=verify, timeout=timeout,
                         task_timeout=task_timeout, poll_interval=poll_interval)
        if not TAG_RE.match(tag):
            raise ValueError(f"tag is not a valid PVE tag: {tag!r}")
        self.rules = OwnershipRules(pool=pool, tag=tag, deployment=deployment)
        self.snippets = SnippetStore(Path(snippets_dir) if snippets_dir is not None else None,
                                     snippets_storage, deployment)
        self._journal: Journal = (
            CloneJournal(Path(journal_dir)) if journal_dir is not None else MemoryCloneJournal())
        self._machine = CreateMachine(self, self.rules, self._journal, self.snippets)

    def __repr__(self) -> str:
        return (f"ProxmoxAPIBackend({self.api_url!r}, token_id={self.token_id!r}, "
                f"pool={self.pool!r}, tag={self.tag!r})")

    @property
    def pool(self) -> str:
        return self.rules.pool

    @property
    def tag(self) -> str:
        return self.rules.tag

    @property
    def deployment(self) -> str | None:
        return self.rules.deployment

    def occupied(self) -> Occupied:
        """VMIDs and addresses held by VMs we do not own (another deployment's, anyone's)."""
        return occupied_by_others(self, tag=self.tag, deployment=self.deployment)

    # ------------------------------------------------------------------ nodes

    def free_memory_by_node(self) -> dict[str, int]:
        """Free memory in bytes per ONLINE node (from /cluster/resources)."""
        out: dict[str, int] = {}
        for entry in self.resources("node"):
            if entry.get("type") != "node" or entry.get("status") != "online":
                continue
            out[str(entry["node"])] = max(0, int(entry.get("maxmem", 0))
                                          - int(entry.get("mem", 0)))
        return out

    def node_resources(self) -> list[ClusterResource]:
        """The ``/cluster/resources?type=node`` entries, as
        :func:`provisioner.placement.choose_node` takes them."""
        return [e for e in self.resources("node") if e.get("type") == "node"]

    def online_nodes(self) -> list[str]:
        return sorted(self.free_memory_by_node())

    # ------------------------------------------------------------------ lifecycle

    def create(self, spec: VMSpec) -> VMRef:
        return self._machine.run(spec)

    def _require(self, ref: VMRef, action: str) -> VMView:
        vm = inspect_vm(self, ref.vmid)
        if vm is None:
            raise NotFound(0, f"VM {ref.vmid} ({ref.name}) does not exist")
        self.rules.verify_owned(vm, ref, action)
        return vm

    def start(self, ref: VMRef) -> None:
        vm = self._require(ref, "start")
        if vm.lock:
            raise Locked(0, f"VM {vm.vmid} is locked ({vm.lock})")
        ensure_running(self, vm)

    def stop(self, ref: VMRef, *, timeout: int = 60) -> None:
        vm = self._require(ref, "stop")
        if power_of(self, vm) == "stopped":
            return
        base = f"nodes/{vm.node}/qemu/{vm.vmid}/status"
        upid = self.task("POST", f"{base}/shutdown", timeout=int(timeout), forceStop=1)
        try:
            self.wait_task(upid, timeout=max(self.task_timeout, timeout + 30))
        except (TaskFailed, Transient) as exc:
            log.warning("pve.shutdown.failed", vmid=vm.vmid, error=exc.message)
            self.wait_task(self.task("POST", f"{base}/stop"))
        if power_of(self, vm) != "stopped":
            raise TaskFailed(0, f"VM {vm.vmid} is still running after shutdown and stop")
        log.info("pve.stop.done", vmid=vm.vmid)

    def status(self, ref: VMRef) -> VMStatus | None:
        vm = inspect_vm(self, ref.vmid)
        if vm is None:
            return None
        try:
            power = power_of(self, vm)
        except NotFound:
            return None
        return vm.to_status(power)

    def list_managed(self) -> list[VMStatus]:
        out: list[VMStatus] = []
        for entry in self.resources("vm"):
            if entry.get("type") != "qemu" or entry.get("template"):
                continue
            if self.tag not in split_tags(str(entry.get("tags") or "")):
                continue
            vm = view_of(self, entry)
            if vm is not None and self.rules.marked_ours(vm):
                out.append(vm.to_status(str(entry.get("status") or "unknown")))
        return sorted(out, key=lambda s: s.vmid)

    # ------------------------------------------------------------------ destroy

    def destroy(self, ref: VMRef) -> None:
        """Two-phase: verify every marker, mark the VM ``<tag>-deleting`` with a digest
        compare-and-set (so nothing changed since the check), stop, re-verify the same instance
        (smbios uuid), then delete with purge. Missing = success."""
        vm = self._find_for_destroy(ref)
        if vm is None:
            self._journal.remove(ref.vmid)
            log.info("pve.destroy.absent", vmid=ref.vmid)
            self.snippets.remove(ref.name)
            return
        self.rules.verify_owned(vm, ref, "destroy")
        if vm.lock:
            raise Locked(0, f"VM {vm.vmid} is locked ({vm.lock})")
        self._mark_deleting(vm)
        self._power_off(vm)
        again = inspect_vm(self, ref.vmid)
        if again is None:
            log.info("pve.destroy.vanished", vmid=vm.vmid)
            self.snippets.remove(ref.name)
            return
        self.rules.verify_owned(again, replace(ref, smbios_uuid=vm.smbios_uuid), "destroy")
        self._machine.firewall.remove(vm.node, vm.vmid)  # PVE drops the .fw file too
        self._delete(vm)
        self._forget(ref)
        log.info("pve.destroy.done", vmid=vm.vmid)

    def _find_for_destroy(self, ref: VMRef) -> VMView | None:
        """The VM to destroy, None when absent; Locked while our clone may still make it."""
        vm = inspect_vm(self, ref.vmid)
        if vm is not None:
            return vm
        if self._own_clone_in_flight(ref):
            raise Locked(0, f"our clone into VM {ref.vmid} is still running; it is "
                            "destroyed once it has finished (retry later)")
        # The clone may have ended between the two reads (PVE adds the VM to the pool
        # only then): look again before calling it absent, or it would leak.
        return inspect_vm(self, ref.vmid)

    def _own_clone_in_flight(self, ref: VMRef) -> bool:
        """Whether a clone we journalled for this subscription may still produce the VM
        (destroying "nothing" now would leak it once the clone task finishes)."""
        pending = self._journal.get(ref.vmid)
        if pending is None or pending.subscription_id != ref.subscription_id:
            return False
        if pending.upid is not None:
            try:
                state, _ = self.task_state(pending.upid)
            except NotFound:
                return False
            return state == "running"
        return not self.vmid_is_free(ref.vmid)

    def _mark_deleting(self, vm: VMView) -> None:
        """Tag ``<tag>-deleting`` with a compare-and-set on the digest just verified."""
        deleting = f"{self.tag}-deleting"
        if deleting in vm.tags:
            return
        params: dict[str, Param] = {"tags": join_tags([*vm.tags, deleting])}
        if vm.digest:
            params["digest"] = vm.digest
        self.request("PUT", f"nodes/{vm.node}/qemu/{vm.vmid}/config", **params)

    def _power_off(self, vm: VMView) -> None:
        if power_of(self, vm) != "stopped":
            self.wait_task(self.task("POST", f"nodes/{vm.node}/qemu/{vm.vmid}/status/stop"))

    def _delete(self, vm: VMView) -> None:
        """Delete with purge (a VM gone meanwhile counts); raise if it is still there."""
        try:
            upid = self.task("DELETE", f"nodes/{vm.node}/qemu/{vm.vmid}", purge=1,
                             **{"destroy-unreferenced-disks": 1})
            self.wait_task(upid)
        except NotFound:
            log.info("pve.destroy.vanished", vmid=vm.vmid)
        if inspect_vm(self, vm.vmid) is not None:
            raise Transient(0, f"VM {vm.vmid} still exists after destroy")

    def _forget(self, ref: VMRef) -> None:
        """Drop what a destroyed VM leaves here: its journal entry and its snippet."""
        pending = self._journal.get(ref.vmid)
        if pending is not None and pending.subscription_id == ref.subscription_id:
            self._journal.remove(ref.vmid)
        self.snippets.remove(ref.name)
