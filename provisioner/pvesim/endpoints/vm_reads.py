"""Reads of one node's VMs: the list, a VM's index, config, current status, agent ping."""

from __future__ import annotations

import copy

from provisioner.pvesim.core.permissions import Permissions
from provisioner.pvesim.core.qemu_conf import agent_enabled, config_digest
from provisioner.pvesim.core.records import Entry
from provisioner.pvesim.core.store import ClusterStore
from provisioner.pvesim.core.views import vm_cpus, vm_summary
from provisioner.pvesim.errors import SimError

_VM_SUBDIRS = ("config", "pending", "status", "unlink", "vncproxy", "termproxy", "migrate",
               "resize", "move", "rrd", "rrddata", "monitor", "agent", "snapshot", "spiceproxy",
               "sendkey", "firewall", "mtunnel", "remote_migrate")


class VmReads:
    def __init__(self, store: ClusterStore, perms: Permissions) -> None:
        self.store = store
        self.perms = perms

    def vm_list(self, token_id: str, node: str) -> list[Entry]:
        with self.store.lock:
            self.store.check_node(node)
            out = []
            for vm in sorted(self.store.vms().values(), key=lambda v: v["vmid"]):
                if vm["node"] != node or not self.perms.visible(token_id, vm):
                    continue
                entry = vm_summary(vm)
                entry["cpus"] = vm_cpus(vm)
                out.append(entry)
            return out

    def vm_index(self, token_id: str, node: str, vmid: int) -> list[dict[str, str]]:
        with self.store.lock:
            self.store.check_node(node)
            self.store.vm_on(node, vmid)
            return [{"subdir": s} for s in _VM_SUBDIRS]

    def config_get(self, token_id: str, node: str, vmid: int) -> Entry:
        """The config as stored, plus its digest (for compare-and-set updates)."""
        with self.store.lock:
            self.store.check_node(node)
            vm = self.store.vm_on(node, vmid)
            out = copy.deepcopy(vm["config"])
            out["digest"] = config_digest(vm["config"])
            return out

    def status_current(self, token_id: str, node: str, vmid: int) -> Entry:
        with self.store.lock:
            self.store.check_node(node)
            vm = self.store.vm_on(node, vmid)
            out = vm_summary(vm)
            out.update({"qmpstatus": vm["status"], "cpus": vm_cpus(vm), "ha": {"managed": 0}})
            if agent_enabled(vm["config"]):
                out["agent"] = 1
            if vm["status"] != "running":
                out.pop("pid", None)
            return out

    def agent_ping(self, token_id: str, node: str, vmid: int) -> Entry:
        with self.store.lock:
            self.store.check_node(node)
            vm = self.store.vm_on(node, vmid)
            if not agent_enabled(vm["config"]):
                raise SimError(500, "No QEMU guest agent configured")
            if vm["status"] != "running" or not vm["guest"].get("agent", True):
                raise SimError(500, "QEMU guest agent is not running")
            return {"result": {}}
