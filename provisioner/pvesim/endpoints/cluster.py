"""Cluster-wide reads: version, nodes, ``/cluster/resources`` and ``/cluster/nextid``."""

from __future__ import annotations

from provisioner.pvesim.core.permissions import Permissions
from provisioner.pvesim.core.pve_storage import storage_resources
from provisioner.pvesim.core.records import Entry
from provisioner.pvesim.core.store import ClusterStore
from provisioner.pvesim.core.views import node_entry, qemu_resource
from provisioner.pvesim.errors import SimError


class ClusterReads:
    def __init__(self, store: ClusterStore, perms: Permissions) -> None:
        self.store = store
        self.perms = perms

    def version(self) -> Entry:
        return {"version": "9.0.10", "release": "9.0", "repoid": "0a1b2c3d", "console": "html5"}

    def nodes(self) -> list[Entry]:
        with self.store.lock:
            out = []
            for entry in self._node_entries():
                entry.pop("cgroup-mode", None)
                entry["ssl_fingerprint"] = "00:" * 31 + "00"
                out.append(entry)
            return out

    def _node_entries(self) -> list[Entry]:
        vms = self.store.vms().values()
        return [node_entry(name, info, vms)
                for name, info in sorted(self.store.state["nodes"].items())]

    def cluster_resources(self, token_id: str, rtype: str | None = None) -> list[Entry]:
        with self.store.lock:
            out: list[Entry] = []
            if rtype in (None, "vm"):
                out.extend(self._vm_resources(token_id))
            if rtype in (None, "node"):
                out.extend(self._node_entries())
            if rtype in (None, "storage"):
                out.extend(storage_resources(self.store.state["nodes"],
                                             shared_local=self.store.cfg.snippets_dir is not None))
            return out

    def _vm_resources(self, token_id: str) -> list[Entry]:
        """The VMs the token may see; a VM on an offline node is ``unknown``."""
        nodes = self.store.state["nodes"]
        out = []
        for vm in sorted(self.store.vms().values(), key=lambda v: v["vmid"]):
            if not self.perms.visible(token_id, vm):
                continue
            entry = qemu_resource(vm)
            node = nodes.get(vm["node"])
            if node is None or node["status"] != "online":
                entry["status"] = "unknown"
            if vm["pool"]:
                entry["pool"] = vm["pool"]
            out.append(entry)
        return out

    def nextid(self, vmid: int | None = None) -> str:
        """The lowest free VMID from 100 (not reserved), or a check that ``vmid`` is free."""
        with self.store.lock:
            vms = self.store.vms()
            if vmid is not None:
                if str(vmid) in vms:
                    raise SimError(400, "Parameter verification failed.",
                                   {"vmid": f"VM {vmid} already exists"})
                return str(vmid)
            candidate = 100
            while str(candidate) in vms:
                candidate += 1
            return str(candidate)
