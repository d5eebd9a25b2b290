"""Resource pools: ``/pools`` (the ones the token may audit) and ``/pools/{poolid}``."""

from __future__ import annotations

from provisioner.pvesim.core.permissions import Permissions
from provisioner.pvesim.core.records import Entry
from provisioner.pvesim.core.store import ClusterStore
from provisioner.pvesim.core.views import qemu_resource
from provisioner.pvesim.errors import SimError


class PoolReads:
    def __init__(self, store: ClusterStore, perms: Permissions) -> None:
        self.store = store
        self.perms = perms

    def _members(self, poolid: str) -> list[Entry]:
        return [qemu_resource(vm)
                for vm in sorted(self.store.vms().values(), key=lambda v: v["vmid"])
                if vm["pool"] == poolid]

    def pools(self, token_id: str, poolid: str | None = None) -> list[Entry]:
        """Every pool the token may audit; with ``poolid``, that one with its members."""
        with self.store.lock:
            out = []
            for pid_, info in sorted(self.store.state["pools"].items()):
                if poolid is not None and pid_ != poolid:
                    continue
                if not self.perms.has_perm(token_id, f"/pool/{pid_}", "Pool.Audit"):
                    continue
                entry: Entry = {"poolid": pid_, "comment": info.get("comment", "")}
                if poolid is not None:
                    entry["members"] = self._members(pid_)
                out.append(entry)
            return out

    def pool(self, token_id: str, poolid: str) -> Entry:
        with self.store.lock:
            info = self.store.state["pools"].get(poolid)
            if info is None:
                raise SimError(500, f"pool '{poolid}' does not exist")
            return {"comment": info.get("comment", ""), "members": self._members(poolid)}
