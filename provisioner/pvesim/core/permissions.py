"""The simulated ACL of the one API token, and PVE's root-only options.

A non-root token holds PVEVMAdmin on ``/pool/<pool>`` (inherited by the pool's members),
VM.Audit + VM.Clone on the template, PVEDatastoreUser on ``/storage`` and Sys.Audit on
``/nodes``; root (and a simulator started without a pool) may do anything. The state
document's ``pool_privs`` (a list), when present, replaces what the token holds on its pool,
as an operator who gave the token a smaller role would (edit the state file, restart).
"""

from __future__ import annotations

from provisioner.pvesim.core.privileges import DATASTORE_USER, TEMPLATE_PRIVS
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
            return "/".join(parts[1:]) == cfg.pool and self._on_pool(priv)
        if parts[0] in ("nodes", ""):
            return priv == "Sys.Audit"
        if parts[0] == "storage":
            return priv in DATASTORE_USER
        return False

    def _on_pool(self, priv: str) -> bool:
        """What the token's role on its pool grants (every privilege unless narrowed)."""
        narrowed = self.store.state.get("pool_privs")
        return narrowed is None or priv in narrowed

    def _on_vm(self, vmid: str, priv: str) -> bool:
        vm = self.store.vms().get(vmid)
        if vm is None:
            return False
        if vm["pool"] == self.store.cfg.pool:
            return self._on_pool(priv)
        if vm["vmid"] == self.store.cfg.template_vmid:
            return priv in TEMPLATE_PRIVS
        return False

    def check(self, token_id: str, path: str, priv: str) -> None:
        """PVE's 403 when the token lacks ``priv`` on ``path``."""
        with self.store.lock:
            if not self.has_perm(token_id, path, priv):
                raise SimError(403, f"Permission check failed ({path}, {priv})")

    def visible(self, token_id: str, vm: VmRecord) -> bool:
        """Listings show only the VMs the token may audit."""
        return self.has_perm(token_id, f"/vms/{vm['vmid']}", "VM.Audit")
