"""``/nodes/{node}/qemu/{vmid}/firewall/{options,ipset}``: a VM's firewall, with PVE's answers.

Options are stored as given and a ``delete`` list removes keys; IP sets are created empty,
refuse a duplicate name or entry, and a non-empty set is deleted only with ``force``; removing
an absent entry succeeds silently (PVE filters the list). Every write honours ``digest``.
"""

from __future__ import annotations

from typing import Any

from provisioner.pvesim.core.firewall_state import (
    canonical_cidr,
    check_digest,
    entry_view,
    firewall_digest,
    firewall_of,
    ipset_of,
)
from provisioner.pvesim.core.records import FirewallRecord, Params
from provisioner.pvesim.core.store import ClusterStore
from provisioner.pvesim.errors import SimError
from provisioner.pvesim.property_strings import split_list

#: the option keys of PUT .../firewall/options (the rest are request parameters)
OPTION_KEYS = ("dhcp", "enable", "ipfilter", "log_level_in", "log_level_out", "macfilter",
               "ndp", "policy_in", "policy_out", "radv")


class Firewalls:
    """The firewall endpoints of one simulated cluster (every call takes the store's lock)."""

    def __init__(self, store: ClusterStore) -> None:
        self.store = store

    def _fw(self, node: str, vmid: int) -> FirewallRecord:
        self.store.check_node(node)
        return firewall_of(self.store.vm_on(node, vmid))

    def options_get(self, node: str, vmid: int) -> dict[str, Any]:
        with self.store.lock:
            return dict(self._fw(node, vmid)["options"])

    def options_put(self, node: str, vmid: int, p: Params) -> None:
        with self.store.lock:
            fw = self._fw(node, vmid)
            check_digest(fw, p.get("digest"))
            deletes = split_list(str(p.get("delete") or ""))
            for key in deletes:
                if key not in OPTION_KEYS:
                    raise SimError(400, "Parameter verification failed.",
                                   {"delete": f"invalid format - unknown option '{key}'"})
                fw["options"].pop(key, None)
            fw["options"].update({k: v for k, v in p.items() if k in OPTION_KEYS})
            self.store.save()

    def ipset_list(self, node: str, vmid: int) -> list[dict[str, Any]]:
        with self.store.lock:
            fw = self._fw(node, vmid)
            digest = firewall_digest(fw)
            return [entry_view({"name": name, "comment": s["comment"]}, digest)
                    for name, s in sorted(fw["ipsets"].items())]

    def ipset_create(self, node: str, vmid: int, p: Params) -> None:
        with self.store.lock:
            fw = self._fw(node, vmid)
            check_digest(fw, p.get("digest"))
            name, rename = str(p["name"]), p.get("rename")
            if rename is not None:
                self._rename(fw, str(rename), name, p.get("comment"))
            elif name in fw["ipsets"]:
                raise SimError(500, f"IPSet '{name}' already exists")
            else:
                fw["ipsets"][name] = {"comment": p.get("comment"), "entries": []}
            self.store.save()

    @staticmethod
    def _rename(fw: FirewallRecord, old: str, new: str, comment: Any) -> None:
        ipset = ipset_of(fw, old)
        if new != old and new in fw["ipsets"]:
            raise SimError(500, f"IPSet '{new}' already exists")
        del fw["ipsets"][old]
        fw["ipsets"][new] = {"comment": comment, "entries": ipset["entries"]}

    def ipset_get(self, node: str, vmid: int, name: str) -> list[dict[str, Any]]:
        with self.store.lock:
            fw = self._fw(node, vmid)
            digest = firewall_digest(fw)
            return [entry_view(e, digest) for e in ipset_of(fw, name)["entries"]]

    def ipset_add(self, node: str, vmid: int, name: str, p: Params) -> None:
        with self.store.lock:
            fw = self._fw(node, vmid)
            ipset = ipset_of(fw, name)
            cidr = canonical_cidr(str(p["cidr"]))
            if any(e["cidr"] == cidr for e in ipset["entries"]):
                raise SimError(500, f"entry '{cidr}' already exists")
            ipset["entries"].append({"cidr": cidr, "comment": p.get("comment"),
                                     "nomatch": p.get("nomatch")})
            self.store.save()

    def ipset_delete(self, node: str, vmid: int, name: str, p: Params) -> None:
        with self.store.lock:
            fw = self._fw(node, vmid)
            if ipset_of(fw, name)["entries"] and not p.get("force"):
                raise SimError(500, f"IPSet '{name}' is not empty")
            del fw["ipsets"][name]
            self.store.save()

    def ipset_remove(self, node: str, vmid: int, name: str, p: Params) -> None:
        with self.store.lock:
            fw = self._fw(node, vmid)
            check_digest(fw, p.get("digest"))
            ipset = ipset_of(fw, name)
            cidr = canonical_cidr(str(p["cidr"]))
            ipset["entries"] = [e for e in ipset["entries"] if e["cidr"] != cidr]
            self.store.save()

