"""The simulated ACL of the one API token, and PVE's root-only options.

A non-root token holds PVEVMAdmin on ``/pool/<pool>`` (inherited by the pool's members),
VM.Audit + VM.Clone on the template and Sys.Audit on ``/nodes``; root (and a simulator started
without a pool) may do anything.
"""

from __future__ import annotations

from provisioner.pvesim.core.records import Params, VmRecord
from provisioner.pvesim.core.store import ClusterStore
from provisioner.pvesim.errors import SimError


def split_user(token_id: str) -> str:
    """``user@realm!tokenid`` -> ``user@realm``."""
    return token_id.split("!", 1)[0]


def is_root(token_id: str) -> bool:
    return split_user(token_id) == "root@pam"


def check_skiplock(token_id: str, params: Params) -> bool:
    """Whether the call skips the VM lock; only root may ask to."""
    if params.get("skiplock"):
        if not is_root(token_id):
            raise SimError(400, "Parameter verification failed.",
                           {"skiplock": "Only root may use this option."})
        return True
    return False


class Permissions:
    """Answers "may this token do that on this path" against the cluster's current VMs."""

    def __init__(self, store: ClusterStore) -> None:
        self.store = store

    def has_perm(self, token_id: str, path: str, priv: str) -> bool:
        cfg = self.store.cfg
        if not cfg.pool or is_root(token_id):
            return True
        parts = path.strip("/").split("/")
        if parts[0] == "vms" and len(parts) == 2:
            return self._on_vm(parts[1], priv)
        if parts[0] == "pool" and len(parts) >= 2:
            return "/".join(parts[1:]) == cfg.pool
        if parts[0] in ("nodes", ""):
            return priv == "Sys.Audit"
        return False

    def _on_vm(self, vmid: str, priv: str) -> bool:
        vm = self.store.vms().get(vmid)
        if vm is None:
            return False
        if vm["pool"] == self.store.cfg.pool:
            return True
        if vm["vmid"] == self.store.cfg.template_vmid:
            return priv in ("VM.Audit", "VM.Clone")
        return False

    def check(self, token_id: str, path: str, priv: str) -> None:
        """PVE's 403 when the token lacks ``priv`` on ``path``."""
        with self.store.lock:
            if not self.has_perm(token_id, path, priv):
                raise SimError(403, f"Permission check failed ({path}, {priv})")

    def visible(self, token_id: str, vm: VmRecord) -> bool:
        """Listings show only the VMs the token may audit."""
        return self.has_perm(token_id, f"/vms/{vm['vmid']}", "VM.Audit")
