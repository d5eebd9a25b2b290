"""Resource pools: ``/pools`` (the ones the token may audit) and ``/pools/{poolid}`` (read and
update).

An update is PVE's ``update_pool``: every named guest or storage is checked before anything
changes, so a refused member leaves the pool (and the guest's old pool) as it was.
"""

from __future__ import annotations

from typing import Any, cast

from provisioner.pvesim.core.permissions import Permissions
from provisioner.pvesim.core.pve_storage import STORAGES
from provisioner.pvesim.core.records import Entry, Params, PoolInfo, VmRecord
from provisioner.pvesim.core.store import ClusterStore
from provisioner.pvesim.core.views import qemu_resource
from provisioner.pvesim.errors import SimError
from provisioner.pvesim.property_strings import split_list

#: what PVE's ``check_perm_modify`` accepts on a member's path besides Permissions.Modify
_MODIFY_PRIVS = {"vms": "VM.Allocate", "pool": "Pool.Allocate", "storage": "Datastore.Allocate"}


def _storage_members(info: PoolInfo) -> list[str]:
    """The pool's storage ids (kept beside the comment; PoolInfo predates them)."""
    members = cast(dict[str, Any], info).setdefault("storage", [])
    return cast(list[str], members)


def _once(items: list[str], what: str) -> list[str]:
    """PVE applies the list in order, so a member named twice fails its own second check."""
    for i, item in enumerate(items):
        if item in items[:i]:
            raise SimError(500, f"{what.format(item)} is named twice")
    return items


class PoolReads:
    def __init__(self, store: ClusterStore, perms: Permissions) -> None:
        self.store = store
        self.perms = perms

    def _members(self, poolid: str) -> list[Entry]:
        vms = [qemu_resource(vm)
               for vm in sorted(self.store.vms().values(), key=lambda v: v["vmid"])
               if vm["pool"] == poolid]
        info = self.store.state["pools"].get(poolid)
        storages = _storage_members(info) if info is not None else []
        return vms + [{"id": f"storage/{node}/{sid}", "type": "storage", "node": node,
                       "storage": sid}
                      for sid in sorted(storages) for node in sorted(self.store.state["nodes"])]

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

    def update(self, token_id: str, poolid: str, p: Params) -> None:
        """``PUT /pools/{poolid}``: comment, then guests (``vms``) and storages added, or
        removed with ``delete``; a guest of another pool moves only with ``allow-move``."""
        with self.store.lock:
            info = self.store.state["pools"].get(poolid)
            if info is None:
                raise SimError(500, f"pool '{poolid}' does not exist")
            guests = [self._guest(token_id, poolid, v, p)
                      for v in _once(split_list(p.get("vms", "")), "VM {}")]
            storages = [self._storage(token_id, info, s, bool(p.get("delete")))
                        for s in _once(split_list(p.get("storage", "")), "Storage '{}'")]
            if "comment" in p:
                info["comment"] = p["comment"]
            for vm in guests:
                vm["pool"] = None if p.get("delete") else poolid
            members = _storage_members(info)
            for sid in storages:
                if p.get("delete"):
                    members.remove(sid)
                else:
                    members.append(sid)
            self.store.save()

    def _check_modify(self, token_id: str, path: str) -> None:
        """PVE's ``check_perm_modify``: Permissions.Modify, or the allocate privilege of the
        path's kind, on that path."""
        kind = path.strip("/").split("/")[0]
        privs = ("Permissions.Modify", _MODIFY_PRIVS[kind])
        if not any(self.perms.has_perm(token_id, path, priv) for priv in privs):
            raise SimError(403, f"Permission check failed ({path}, {' | '.join(privs)})")

    def _guest(self, token_id: str, poolid: str, vmid_text: str, p: Params) -> VmRecord:
        """The guest to add or remove, once every check of it passed."""
        self._check_modify(token_id, f"/vms/{vmid_text}")
        vm = self.store.vms().get(vmid_text)
        if vm is None:
            raise SimError(500, f"VM {vmid_text} does not exist")
        if p.get("delete"):
            if vm["pool"] != poolid:
                raise SimError(500, f"VM {vmid_text} is not a pool member")
            return vm
        if vm["pool"] == poolid:
            raise SimError(500, f"VM {vmid_text} is already a pool member")
        if vm["pool"]:
            if not p.get("allow-move"):
                raise SimError(500, f"VM {vmid_text} belongs already to pool '{vm['pool']}' "
                                    "and 'allow-move' is not set")
            self._check_modify(token_id, f"/pool/{vm['pool']}")
        return vm

    def _storage(self, token_id: str, info: PoolInfo, sid: str, delete: bool) -> str:
        """The storage id to add or remove, once every check of it passed."""
        self._check_modify(token_id, f"/storage/{sid}")
        if sid not in STORAGES:
            raise SimError(500, f"storage '{sid}' does not exist")
        member = sid in _storage_members(info)
        if delete and not member:
            raise SimError(500, f"Storage '{sid}' is not a pool member")
        if not delete and member:
            raise SimError(500, f"Storage '{sid}' is already a pool member")
        return sid
