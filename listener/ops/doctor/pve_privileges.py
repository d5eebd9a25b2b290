"""Whether the API token holds every privilege the daemon's calls need, by PVE's own answer
(``GET /access/permissions``: the token's effective privileges per path, which already
reflect privilege separation; a path not listed inherits its nearest listed ancestor's
propagated ones).

What each call checks (PVE's API schema; provisioner/proxmox/ makes the calls):

- clone from the template: VM.Clone on ``/vms/<template>``, VM.Allocate on ``/pool/<pool>``
  and Datastore.AllocateSpace on ``/storage/<storage>`` (a full clone's disks);
- configure the clone: VM.Config.CPU (cores), .Memory, .Network (net0), .Cloudinit (ciuser,
  ipconfig0, cicustom), .Options (tags); grow its disk: VM.Config.Disk;
- the tenant firewall (options, ipsets): VM.Config.Network, reading it VM.Audit;
- start, shutdown, stop: VM.PowerMgmt; destroy: VM.Allocate; read config and status, see the
  VM in /cluster/resources: VM.Audit (the pool's members inherit ``/pool/<pool>``);
- placement and the snippet check read nodes (Sys.Audit on ``/nodes``) and storages
  (Datastore.Audit on ``/storage/<id>``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from listener.config import Config
from listener.ops.doctor.check import Check, failed, guarded, passed
from provisioner.proxmox.client import PveClient

POOL_PRIVS = ("VM.Allocate", "VM.Audit", "VM.Config.CPU", "VM.Config.Cloudinit",
              "VM.Config.Disk", "VM.Config.Memory", "VM.Config.Network", "VM.Config.Options",
              "VM.PowerMgmt")
NAME = "PVE privileges"


def required_privileges(config: Config) -> dict[str, tuple[str, ...]]:
    """Path -> the privileges the daemon needs there."""
    px = config.proxmox
    needed: dict[str, tuple[str, ...]] = {
        f"/pool/{px.pool}": POOL_PRIVS,
        f"/vms/{px.template_vmid}": ("VM.Audit", "VM.Clone"),
        "/nodes": ("Sys.Audit",),
        f"/storage/{px.storage}": ("Datastore.AllocateSpace", "Datastore.Audit"),
    }
    if px.cloudinit_storage != px.storage:
        needed[f"/storage/{px.cloudinit_storage}"] = ("Datastore.Audit",)
    return needed


def _ancestors(path: str) -> list[str]:
    """``/vms/100`` -> [``/vms/100``, ``/vms``, ``/``]."""
    parts = path.strip("/").split("/")
    return [("/" + "/".join(parts[:n])) if n else "/" for n in range(len(parts), -1, -1)]


def held_at(tree: Mapping[str, object], path: str) -> set[str]:
    """The privileges on ``path`` from PVE's permission tree: those listed for the path itself,
    else the propagated ones of its nearest listed ancestor."""
    for at in _ancestors(path):
        privs = tree.get(at)
        if isinstance(privs, Mapping):
            entries = cast("Mapping[str, object]", privs)
            return {p for p, flag in entries.items() if at == path or str(flag) in ("1", "True")}
    return set()


def missing_privileges(client: PveClient, config: Config) -> dict[str, list[str]]:
    """Path -> the needed privileges the token lacks there (empty when it has them all)."""
    tree = client.get_object("access/permissions", userid=config.proxmox.token_id)
    missing = {}
    for path, privs in required_privileges(config).items():
        held = held_at(tree, path)
        lacking = [p for p in privs if p not in held]
        if lacking:
            missing[path] = lacking
    return missing


def _grant_hint(config: Config) -> str:
    px = config.proxmox
    return (f"grant them to the token (privilege separation: to its user too), e.g. pveum acl "
            f"modify /pool/{px.pool} --tokens '{px.token_id}' --roles PVEVMAdmin; "
            f"/vms/{px.template_vmid}: VM.Audit+VM.Clone; /storage/{px.storage}: "
            "PVEDatastoreUser; /nodes: Sys.Audit")


def privileges_check(client: PveClient, config: Config) -> Check:
    def run() -> Check:
        missing = missing_privileges(client, config)
        if missing:
            listed = "; ".join(f"{path}: {', '.join(privs)}" for path, privs in missing.items())
            return failed(NAME, f"the token lacks {listed}", _grant_hint(config))
        paths = ", ".join(required_privileges(config))
        return passed(NAME, f"every privilege the daemon uses is held on {paths}")

    return guarded(NAME, "check that the token may read its own permissions "
                         "(GET /access/permissions)", run)
