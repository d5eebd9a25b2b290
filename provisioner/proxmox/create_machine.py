"""Creating one VM: clone -> configure -> resize -> start, resumable after any crash.

VMIDs always come from the caller (never from ``/cluster/nextid``, which reserves nothing).
PVE adds a clone to our pool only when the clone task ends, so while it runs the new VM is
invisible to a pool-scoped token, exactly like a foreign VM. The clone journal, written before
every clone POST, tells the two apart: our own half-made VM is waited for and adopted, an id
held by anything else is refused (VmidTaken) and never touched.
"""

from __future__ import annotations

import re
import time
from dataclasses import replace
from typing import NoReturn

import structlog
from structlog.typing import FilteringBoundLogger

from provisioner.backend import (
    NAME_RE,
    TAG_RE,
    VMRef,
    VMSpec,
    parse_marker,
)
from provisioner.errors import (
    AlreadyExists,
    Locked,
    NotFound,
    PveError,
    TaskFailed,
    Transient,
    VmidTaken,
)
from provisioner.proxmox.client import Param, PveClient, expect_upid, task_ok
from provisioner.proxmox.clone_journal import CloneJournal, Journal, PendingClone, new_entry
from provisioner.proxmox.encoders import (
    GIB,
    boot_disk,
    build_ipconfig,
    disk_size,
    join_tags,
    net0_value,
)
from provisioner.proxmox.firewall import TenantFirewall, tenant_addresses, with_firewall
from provisioner.proxmox.ownership import OwnershipRules
from provisioner.proxmox.snippets import SnippetStore
from provisioner.proxmox.vm_view import VMView, find_resource, inspect_vm, power_of

log = structlog.get_logger(__name__)


def validate_spec(spec: VMSpec, pool: str) -> None:
    """Refuse a spec PVE would reject (or that would land outside our pool) before any call."""
    if not NAME_RE.match(spec.name):
        raise ValueError(f"VM name is not a valid DNS name: {spec.name!r}")
    if not 100 <= spec.vmid <= 999_999_999:
        raise ValueError(f"VMID out of range: {spec.vmid}")
    if spec.pool != pool:
        raise ValueError(f"spec pool {spec.pool!r} differs from the backend pool {pool!r}")
    if spec.cores < 1 or spec.memory_mb < 16 or spec.disk_gb < 1:
        raise ValueError("cores >= 1, memory_mb >= 16 and disk_gb >= 1 are required")
    for tag in spec.tags:
        if not TAG_RE.match(tag):
            raise ValueError(f"not a valid PVE tag: {tag!r}")
    if not re.fullmatch(r"[-_.\w]+", spec.bridge):
        raise ValueError(f"not a valid bridge name: {spec.bridge!r}")
    if not spec.username or any(c in spec.username for c in ",=\n\r"):
        raise ValueError(f"invalid username: {spec.username!r}")
    build_ipconfig(spec.ipv4_cidr, spec.gateway4, spec.ipv6_cidr, spec.gateway6)


def ensure_running(client: PveClient, vm: VMView) -> None:
    """Start ``vm`` unless it runs (a start that finds it running counts as done)."""
    if power_of(client, vm) == "running":
        return
    upid = client.task("POST", f"nodes/{vm.node}/qemu/{vm.vmid}/status/start")
    try:
        client.wait_task(upid)
    except TaskFailed as exc:
        if "already running" not in exc.message:
            raise
    log.info("pve.start.done", vmid=vm.vmid, node=vm.node)


def _clone_params(spec: VMSpec, template_node: str, marker: str) -> dict[str, Param]:
    """The clone POST: the description marker goes in here, so even a clone whose configure
    step never ran is provably ours."""
    params: dict[str, Param] = {
        "newid": spec.vmid,
        "name": spec.name,
        "description": marker,
        "pool": spec.pool,
        "full": 1 if spec.full_clone else 0,
    }
    if spec.node != template_node:
        params["target"] = spec.node
    if spec.storage and spec.full_clone:
        params["storage"] = spec.storage
    return params


class CreateMachine:
    """The create state machine of :class:`provisioner.proxmox.backend.ProxmoxAPIBackend`."""

    def __init__(self, client: PveClient, rules: OwnershipRules, journal: Journal,
                 snippets: SnippetStore) -> None:
        self.client = client
        self.rules = rules
        self.journal = journal
        self.snippets = snippets
        self.firewall = TenantFirewall(client)
        self._template_nodes: dict[int, str] = {}

    def run(self, spec: VMSpec) -> VMRef:
        """Clone (or adopt / resume), configure, resize and start ``spec``; idempotent."""
        validate_spec(spec, self.rules.pool)
        blog = log.bind(vmid=spec.vmid, name=spec.name, sub=spec.subscription_id)
        vm = self._obtain(spec, blog)
        self.journal.remove(spec.vmid)
        if spec.user_data is not None:
            self.snippets.write(spec.name, spec.user_data)
        self._configure(vm, spec)
        vm = inspect_vm(self.client, spec.vmid) or vm
        self.firewall.apply(vm.node, vm.vmid, tenant_addresses(spec))  # before it ever runs
        self._resize(vm, spec)
        ensure_running(self.client, vm)
        blog.info("pve.create.done", node=vm.node, smbios_uuid=vm.smbios_uuid)
        return VMRef(vmid=spec.vmid, node=vm.node, name=spec.name,
                     subscription_id=spec.subscription_id, smbios_uuid=vm.smbios_uuid)

    def _obtain(self, spec: VMSpec, blog: FilteringBoundLogger) -> VMView:
        """Our VM at ``spec.vmid``: the visible one adopted, else a clone resumed or made."""
        vm = inspect_vm(self.client, spec.vmid)
        if vm is None:
            return self._clone_or_resume(spec)
        self._check_adoptable(vm, spec)
        blog.info("pve.create.adopt", node=vm.node)
        return vm

    # ------------------------------------------------------------------ adopt

    def _check_adoptable(self, vm: VMView, spec: VMSpec) -> None:
        """Raise unless ``vm`` is ours to finish: VmidTaken (not ours) or Locked (busy)."""
        if vm.lock == "clone" and parse_marker(vm.description) is None:
            self._refuse_running_clone(vm, spec)
        problems = self.rules.problems(vm, subscription_id=spec.subscription_id,
                                       name=spec.name, smbios_uuid=None, require_tags=False)
        if problems:
            log.warning("pve.create.vmid_taken", vmid=vm.vmid, problems=problems)
            raise VmidTaken(0, f"VMID {vm.vmid} is taken by a VM that is not ours ("
                               + "; ".join(problems) + ")")
        if vm.lock:
            raise Locked(0, f"VM {vm.vmid} is locked ({vm.lock})")

    def _refuse_running_clone(self, vm: VMView, spec: VMSpec) -> NoReturn:
        """A clone is running into ``vm`` and has not written its marker yet."""
        pending = self.journal.get(vm.vmid)
        ours = pending is not None and pending.subscription_id == spec.subscription_id
        if not ours and isinstance(self.journal, CloneJournal):
            # the journal is written before every clone POST: no entry = not our clone
            raise VmidTaken(0, f"VMID {vm.vmid} is being cloned by someone else "
                               "(lock: clone, no clone of ours recorded)")
        raise Locked(0, f"VM {vm.vmid} is being cloned (lock: clone); retry later")

    def _finished_clone(self, spec: VMSpec) -> VMView:
        """The VM a finished clone made, checked before it is adopted."""
        vm = inspect_vm(self.client, spec.vmid)
        if vm is None:
            raise Transient(0, f"clone of VM {spec.vmid} finished but the VM is not visible yet")
        self._check_adoptable(vm, spec)
        return vm

    # ------------------------------------------------------------------ resume

    def _clone_or_resume(self, spec: VMSpec) -> VMView:
        """The VMID is not visible to us: resume a clone we started earlier (maybe before a
        crash), or start one. Raises Locked while our own clone still runs and VmidTaken when
        the id is held by something we did not create."""
        pending = self._pending_for(spec)
        if pending is not None:
            vm = self._resume(pending, spec)
            if vm is not None:
                return vm
        return self._clone(spec)

    def _pending_for(self, spec: VMSpec) -> PendingClone | None:
        """Our journalled clone into ``spec.vmid``; an entry of another subscription is stale."""
        pending = self.journal.get(spec.vmid)
        if pending is not None and pending.subscription_id != spec.subscription_id:
            blog = log.bind(vmid=spec.vmid, sub=spec.subscription_id)
            blog.info("pve.clone.stale_journal", other_sub=pending.subscription_id)
            self.journal.remove(spec.vmid)
            return None
        return pending

    def _resume(self, pending: PendingClone, spec: VMSpec) -> VMView | None:
        """The VM of an earlier clone, or None when a fresh clone may start."""
        if pending.upid is not None:
            return self._resume_task(pending.upid, spec)
        if not self.client.vmid_is_free(spec.vmid):
            self._unanswered_clone(pending, spec)
        self.journal.remove(spec.vmid)
        return None

    def _resume_task(self, upid: str, spec: VMSpec) -> VMView | None:
        """Adopt what our clone task made, wait while it runs, forget it when it failed."""
        blog = log.bind(vmid=spec.vmid, sub=spec.subscription_id)
        try:
            state, exitstatus = self.client.task_state(upid)
        except NotFound:
            state, exitstatus = "stopped", "task vanished"
        if state == "running":
            raise Locked(0, f"our clone into VM {spec.vmid} is still running "
                            f"({upid}); retry later", upid=upid)
        if task_ok(exitstatus):
            vm = self._finished_clone(spec)
            blog.info("pve.clone.resumed", upid=upid)
            return vm
        # a failed clone task frees its volumes and config: start over
        blog.info("pve.clone.previous_failed", upid=upid, exitstatus=exitstatus)
        self.journal.remove(spec.vmid)
        return None

    def _unanswered_clone(self, pending: PendingClone, spec: VMSpec) -> NoReturn:
        """The clone POST went out but its answer was lost (crash, dropped connection) and
        the id is taken: wait for it, or give the id up once the clone must have ended."""
        timeout = self.client.task_timeout
        if time.time() - pending.started_at < timeout:
            raise Locked(0, f"VM {spec.vmid} exists but is not visible yet; our clone "
                            "is probably still running; retry later")
        self.journal.remove(spec.vmid)
        raise VmidTaken(0, f"VMID {spec.vmid} is held by a VM this token cannot see "
                           f"(no clone of ours finished within {timeout:g}s)")

    # ------------------------------------------------------------------ clone

    def _template_node(self, template_vmid: int) -> str:
        cached = self._template_nodes.get(template_vmid)
        if cached:
            return cached
        entry = find_resource(self.client, template_vmid)
        if entry is None:
            raise NotFound(0, f"template VM {template_vmid} not found (or not visible to "
                              f"token {self.client.token_id})")
        node = str(entry["node"])
        self._template_nodes[template_vmid] = node
        return node

    def _clone(self, spec: VMSpec) -> VMView:
        """Journal the intent, POST the clone and wait for it; a POST lost in transit is
        recovered, an id that turns out to exist is adopted only when it is ours."""
        tnode = self._template_node(spec.template_vmid)
        params = _clone_params(spec, tnode, self.rules.marker(spec.subscription_id, spec.name))
        blog = log.bind(vmid=spec.vmid, template=spec.template_vmid, node=tnode,
                        target=spec.node)
        intent = new_entry(spec.vmid, spec.subscription_id, spec.name, spec.template_vmid)
        self.journal.record(intent)
        path = f"nodes/{tnode}/qemu/{spec.template_vmid}/clone"
        try:
            answer = self.client.request("POST", path, **params)
        except AlreadyExists:
            return self._adopt_existing(spec, blog)
        except Transient as exc:
            blog.warning("pve.clone.outcome_unknown", error=exc.message)
            return self._recover_clone(spec, exc)
        except PveError:
            self.journal.remove(spec.vmid)
            raise
        self.journal.record(replace(intent, upid=str(answer)))
        blog.info("pve.clone.started", upid=answer)
        return self._await_clone(expect_upid(answer), spec, blog)

    def _await_clone(self, upid: str, spec: VMSpec, blog: FilteringBoundLogger) -> VMView:
        try:
            self.client.wait_task(upid)
        except (TaskFailed, Locked, AlreadyExists, NotFound):
            self.journal.remove(spec.vmid)  # PVE cleaned up after the failed worker
            raise
        vm = self._finished_clone(spec)
        blog.info("pve.clone.done", smbios_uuid=vm.smbios_uuid, node=vm.node)
        return vm

    def _adopt_existing(self, spec: VMSpec, blog: FilteringBoundLogger) -> VMView:
        """The clone POST found the id taken: ours if it is visible and carries our marker."""
        self.journal.remove(spec.vmid)
        vm = inspect_vm(self.client, spec.vmid)
        if vm is None:
            blog.warning("pve.create.vmid_taken", problems=["not visible to this token"])
            raise VmidTaken(0, f"VMID {spec.vmid} already exists and is not visible to "
                               "this token (not ours)") from None
        self._check_adoptable(vm, spec)
        blog.info("pve.clone.adopt_existing")
        return vm

    def _recover_clone(self, spec: VMSpec, cause: Transient) -> VMView:
        """The clone POST failed in transit: find out whether PVE started it."""
        deadline = time.monotonic() + self.client.task_timeout
        while True:
            if self.client.vmid_is_free(spec.vmid):
                self.journal.remove(spec.vmid)
                raise Transient(0, f"clone of VM {spec.vmid} was not started ({cause.message}); "
                                   "safe to retry") from None
            # the VMID exists: our clone (probably) started
            vm = inspect_vm(self.client, spec.vmid)
            if vm is not None and vm.lock != "clone":
                self._check_adoptable(vm, spec)
                return vm
            if time.monotonic() >= deadline:
                raise Transient(0, f"clone of VM {spec.vmid} still running after "
                                   f"{self.client.task_timeout:g}s")
            time.sleep(self.client.poll_interval)

    # ------------------------------------------------------------------ configure

    def _config_params(self, vm: VMView, spec: VMSpec) -> dict[str, Param]:
        """The configure PUT: size, network, cloud-init and our tags; the digest makes it a
        compare-and-set against the config just read."""
        params: dict[str, Param] = {
            "cores": spec.cores,
            "memory": spec.memory_mb,
            "net0": with_firewall(net0_value(vm.text("net0"), spec.bridge)),
            "ciuser": spec.username,
            "tags": join_tags([*self.rules.own_tags(spec.subscription_id), *spec.tags]),
        }
        ipconfig = build_ipconfig(spec.ipv4_cidr, spec.gateway4, spec.ipv6_cidr, spec.gateway6)
        if ipconfig:
            params["ipconfig0"] = ipconfig
        cicustom = self.snippets.cicustom(spec.name)
        if spec.user_data is not None and cicustom is not None:
            params["cicustom"] = cicustom
        if vm.digest:
            params["digest"] = vm.digest
        return params

    def _configure(self, vm: VMView, spec: VMSpec) -> None:
        params = self._config_params(vm, spec)
        self.client.request("PUT", f"nodes/{vm.node}/qemu/{vm.vmid}/config", **params)
        log.info("pve.config.set", vmid=vm.vmid, keys=sorted(k for k in params if k != "digest"))

    def _resize(self, vm: VMView, spec: VMSpec) -> None:
        """Grow the boot disk to ``spec.disk_gb`` (never shrink)."""
        disk = boot_disk(vm.config)
        if disk is None:
            log.warning("pve.resize.no_disk", vmid=vm.vmid)
            return
        current = disk_size(str(vm.config[disk])) or 0
        if spec.disk_gb * GIB <= current:
            return
        upid = self.client.task("PUT", f"nodes/{vm.node}/qemu/{vm.vmid}/resize", disk=disk,
                                size=f"{spec.disk_gb}G")
        self.client.wait_task(upid)
        log.info("pve.resize.done", vmid=vm.vmid, disk=disk, size_gb=spec.disk_gb)
