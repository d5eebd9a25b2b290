"""The control API's operations: see everything, and change the cluster behind PVE's back.

Tests use it to set the scene (a foreign VM, a lock left by a backup, an offline node, a guest
that ignores ACPI) and to read the whole state; it is not part of PVE's API.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

from provisioner.pvesim.core.qemu_conf import gen_mac
from provisioner.pvesim.core.records import Entry, NodeInfo, TaskRecord, VmConfig, VmRecord
from provisioner.pvesim.core.store import ClusterStore
from provisioner.pvesim.core.tasks import task_view
from provisioner.pvesim.core.topology import new_vm_record, now
from provisioner.pvesim.core.views import node_entry, vm_view
from provisioner.pvesim.errors import SimError
from provisioner.pvesim.property_strings import split_list

_CREATE_FIELDS = {"vmid", "node", "name", "pool", "tags", "description", "status", "lock",
                  "config", "template"}
_UPDATE_FIELDS = {"status", "lock", "pool", "node", "config", "guest_acpi", "guest_agent"}
_NODE_FIELDS = {"status", "maxmem", "mem_base", "maxcpu"}


def _reject_unknown(spec: dict[str, Any], allowed: set[str]) -> None:
    unknown = set(spec) - allowed
    if unknown:
        raise SimError(400, f"unknown fields: {sorted(unknown)}")


def _task_detail(task: TaskRecord) -> Entry:
    view = task_view(task)
    view["log"] = list(task["log"])
    view["fault"] = task.get("fault")
    return view


def _foreign_config(vmid: int, spec: dict[str, Any]) -> VmConfig:
    """A plain VM's config, with what the spec asks for on top."""
    config: VmConfig = {
        "name": spec.get("name") or f"foreign-{vmid}",
        "cores": 1, "memory": "1024", "scsihw": "virtio-scsi-pci",
        "scsi0": f"local-lvm:vm-{vmid}-disk-0,size=8G",
        "net0": f"virtio={gen_mac()},bridge=vmbr0",
        "smbios1": f"uuid={uuid.uuid4()}",
    }
    tags = spec.get("tags")
    if tags:
        if isinstance(tags, str):
            tags = split_list(tags)
        config["tags"] = ";".join(sorted(set(tags)))
    if spec.get("description"):
        config["description"] = spec["description"]
    if spec.get("lock"):
        config["lock"] = spec["lock"]
    if spec.get("template"):
        config["template"] = 1
    config.update(spec.get("config") or {})
    return config


def _check_status(status: Any) -> None:
    if status not in ("running", "stopped"):
        raise SimError(400, "status must be running or stopped")


def _set_status(vm: VmRecord, status: str) -> None:
    _check_status(status)
    vm["status"] = status
    vm["started_at"] = now() if status == "running" else None
    vm["pid"] = random.randint(1000, 999999) if status == "running" else None


def _set_lock(vm: VmRecord, lock: Any) -> None:
    if lock:
        vm["config"]["lock"] = lock
    else:
        vm["config"].pop("lock", None)


def _edit_config(vm: VmRecord, edits: dict[str, Any]) -> None:
    """Set keys; a None value deletes the key."""
    for key, value in edits.items():
        if value is None:
            vm["config"].pop(key, None)
        else:
            vm["config"][key] = value


def _set_capacity(info: NodeInfo, spec: dict[str, Any]) -> None:
    if "maxmem" in spec:
        info["maxmem"] = int(spec["maxmem"])
    if "mem_base" in spec:
        info["mem_base"] = int(spec["mem_base"])
    if "maxcpu" in spec:
        info["maxcpu"] = int(spec["maxcpu"])


class SimControl:
    def __init__(self, store: ClusterStore) -> None:
        self.store = store

    def snapshot(self) -> Entry:
        """Everything the simulator knows, for tests to read."""
        with self.store.lock:
            state, cfg = self.store.state, self.store.cfg
            tasks = sorted(state["tasks"].values(), key=lambda t: (t["starttime"], t["pid"]))
            vms = sorted(self.store.vms().values(), key=lambda v: v["vmid"])
            return {
                "nodes": {n: node_entry(n, i, self.store.vms().values())
                          for n, i in sorted(state["nodes"].items())},
                "pool": cfg.pool or None,
                "pools": sorted(state["pools"]),
                "template_vmid": cfg.template_vmid,
                "vms": [vm_view(vm) for vm in vms],
                "tasks": [_task_detail(task) for task in tasks],
                "faults": [dict(f) for f in state["faults"]],
                "state_file": str(cfg.state_file) if cfg.state_file else None,
            }

    def _ensure_pool(self, pool: str) -> None:
        if pool not in self.store.state["pools"]:
            self.store.state["pools"][pool] = {"comment": ""}

    def _new_vmid(self, spec: dict[str, Any]) -> int:
        try:
            vmid = int(spec["vmid"])
        except (KeyError, TypeError, ValueError):
            raise SimError(400, "vmid (integer) is required") from None
        if str(vmid) in self.store.vms():
            raise SimError(409, f"VM {vmid} already exists")
        return vmid

    def _known_node(self, node: Any) -> str:
        if node not in self.store.state["nodes"]:
            raise SimError(400, f"no such node {node!r}")
        return str(node)

    def create_vm(self, spec: dict[str, Any]) -> Entry:
        """Create a VM directly (e.g. a foreign VM with no ownership markers)."""
        _reject_unknown(spec, _CREATE_FIELDS)
        with self.store.lock:
            vmid = self._new_vmid(spec)
            node = self._known_node(spec.get("node") or self.store.cfg.nodes[0])
            pool = spec.get("pool")
            if pool:
                self._ensure_pool(pool)
            config = _foreign_config(vmid, spec)
            status = spec.get("status", "stopped")
            _check_status(status)
            vm = new_vm_record(vmid, node, config, pool=pool, status=status)
            self.store.vms()[str(vmid)] = vm
            self.store.save()
            return vm_view(vm)

    def update_vm(self, vmid: int, spec: dict[str, Any]) -> Entry:
        """Change a VM behind the API's back (out-of-band edits, guest behaviour)."""
        _reject_unknown(spec, _UPDATE_FIELDS)
        with self.store.lock:
            vm = self.store.get_vm(vmid)
            if vm is None:
                raise SimError(404, f"VM {vmid} does not exist")
            self._apply_update(vm, spec)
            self.store.save()
            return vm_view(vm)

    def _apply_update(self, vm: VmRecord, spec: dict[str, Any]) -> None:
        if "status" in spec:
            _set_status(vm, spec["status"])
        if "lock" in spec:
            _set_lock(vm, spec["lock"])
        if "pool" in spec:
            vm["pool"] = spec["pool"] or None
            if vm["pool"]:
                self._ensure_pool(vm["pool"])
        if "node" in spec:
            vm["node"] = self._known_node(spec["node"])
        _edit_config(vm, spec.get("config") or {})
        if "guest_acpi" in spec:
            vm["guest"]["acpi"] = bool(spec["guest_acpi"])
        if "guest_agent" in spec:
            vm["guest"]["agent"] = bool(spec["guest_agent"])

    def delete_vm(self, vmid: int) -> None:
        with self.store.lock:
            if self.store.vms().pop(str(vmid), None) is None:
                raise SimError(404, f"VM {vmid} does not exist")
            self.store.save()

    def set_node(self, node: str, spec: dict[str, Any]) -> Entry:
        """Take a node offline or online, or change its capacity."""
        _reject_unknown(spec, _NODE_FIELDS)
        with self.store.lock:
            info = self.store.state["nodes"].get(node)
            if info is None:
                raise SimError(404, f"no such node {node!r}")
            if "status" in spec:
                if spec["status"] not in ("online", "offline"):
                    raise SimError(400, "status must be online or offline")
                info["status"] = spec["status"]
            _set_capacity(info, spec)
            self.store.save()
            return node_entry(node, info, self.store.vms().values())

    def reset(self) -> None:
        self.store.reset()
