"""The PVE API routes the simulator serves, and the privilege each one checks first."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from provisioner.pvesim.core.permissions import Permissions
from provisioner.pvesim.errors import SimError
from provisioner.pvesim.params import ENDPOINTS

API_PREFIX = "/api2/json"


@dataclass(frozen=True)
class Route:
    method: str
    template: str
    op: str
    regex: re.Pattern[str]


def _compile(template: str) -> re.Pattern[str]:
    pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template)
    return re.compile(f"^{pattern}$")


ROUTE_TABLE: list[tuple[str, str, str]] = [
    ("GET", "/version", "version"),
    ("GET", "/access/permissions", "access_permissions"),
    ("GET", "/nodes", "nodes"),
    ("GET", "/cluster/resources", "cluster_resources"),
    ("GET", "/cluster/nextid", "nextid"),
    ("GET", "/pools", "pools"),
    ("GET", "/pools/{poolid}", "pool"),
    ("PUT", "/pools/{poolid}", "pool_update"),
    ("GET", "/nodes/{node}/qemu", "vm_list"),
    ("POST", "/nodes/{node}/qemu", "create"),
    ("POST", "/nodes/{node}/qemu/{vmid}/template", "template"),
    ("GET", "/nodes/{node}/qemu/{vmid}", "vm_index"),
    ("DELETE", "/nodes/{node}/qemu/{vmid}", "destroy"),
    ("POST", "/nodes/{node}/qemu/{vmid}/clone", "clone"),
    ("GET", "/nodes/{node}/qemu/{vmid}/config", "config_get"),
    ("PUT", "/nodes/{node}/qemu/{vmid}/config", "config_put"),
    ("POST", "/nodes/{node}/qemu/{vmid}/config", "config_post"),
    ("PUT", "/nodes/{node}/qemu/{vmid}/resize", "resize"),
    ("GET", "/nodes/{node}/qemu/{vmid}/status/current", "status_current"),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/start", "start"),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/shutdown", "shutdown"),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/stop", "stop"),
    ("POST", "/nodes/{node}/qemu/{vmid}/agent/ping", "agent_ping"),
    ("GET", "/nodes/{node}/qemu/{vmid}/firewall/options", "fw_options_get"),
    ("PUT", "/nodes/{node}/qemu/{vmid}/firewall/options", "fw_options_put"),
    ("GET", "/nodes/{node}/qemu/{vmid}/firewall/ipset", "fw_ipset_list"),
    ("POST", "/nodes/{node}/qemu/{vmid}/firewall/ipset", "fw_ipset_create"),
    ("GET", "/nodes/{node}/qemu/{vmid}/firewall/ipset/{name}", "fw_ipset_get"),
    ("POST", "/nodes/{node}/qemu/{vmid}/firewall/ipset/{name}", "fw_ipset_add"),
    ("DELETE", "/nodes/{node}/qemu/{vmid}/firewall/ipset/{name}", "fw_ipset_delete"),
    ("DELETE", "/nodes/{node}/qemu/{vmid}/firewall/ipset/{name}/{cidr}", "fw_ipset_remove"),
    ("GET", "/nodes/{node}/tasks/{upid}/status", "task_status"),
    ("GET", "/nodes/{node}/tasks/{upid}/log", "task_log"),
]
ROUTES = [Route(m, t, op, _compile(t)) for m, t, op in ROUTE_TABLE]
assert all((r.method, r.template) in ENDPOINTS for r in ROUTES)

#: privilege needed on /vms/{vmid} per operation (PVE's ``permissions.check``)
VM_PRIVS = {
    "destroy": "VM.Allocate",
    "template": "VM.Allocate",
    "config_get": "VM.Audit",
    "config_put": "VM.Config.Options",
    "config_post": "VM.Config.Options",
    "resize": "VM.Config.Disk",
    "status_current": "VM.Audit",
    "start": "VM.PowerMgmt",
    "shutdown": "VM.PowerMgmt",
    "stop": "VM.PowerMgmt",
    "agent_ping": "VM.GuestAgent.Audit",
    "fw_options_get": "VM.Audit",
    "fw_options_put": "VM.Config.Network",
    "fw_ipset_list": "VM.Audit",
    "fw_ipset_create": "VM.Config.Network",
    "fw_ipset_get": "VM.Audit",
    "fw_ipset_add": "VM.Config.Network",
    "fw_ipset_delete": "VM.Config.Network",
    "fw_ipset_remove": "VM.Config.Network",
}


def match_route(method: str, rel: str) -> tuple[Route, dict[str, str]]:
    """The route of ``method rel`` (below the API prefix) and its path parameters; else 501."""
    for route in ROUTES:
        m = route.regex.match(rel)
        if m and route.method == method:
            return route, {k: unquote(v) for k, v in m.groupdict().items()}
    raise SimError(501, f"Method '{method} {API_PREFIX}{rel}' not implemented")


def _check_allocate(perms: Permissions, token_id: str, raw: dict[str, str], id_key: str) -> None:
    """A new VM needs VM.Allocate on its pool, or on its VMID when it joins none."""
    pool = raw.get("pool")
    if pool:
        perms.check(token_id, f"/pool/{pool}", "VM.Allocate")
    else:
        perms.check(token_id, f"/vms/{raw.get(id_key)}", "VM.Allocate")


def check_permissions(perms: Permissions, token_id: str, route: Route,
                      raw: dict[str, str]) -> None:
    """PVE checks privileges (403) before it verifies parameters (400)."""
    if route.op == "clone":
        perms.check(token_id, f"/vms/{raw.get('vmid')}", "VM.Clone")
        _check_allocate(perms, token_id, raw, "newid")
    elif route.op == "create":
        _check_allocate(perms, token_id, raw, "vmid")
    elif route.op == "pool":
        perms.check(token_id, f"/pool/{raw.get('poolid')}", "Pool.Audit")
    elif route.op == "pool_update":
        perms.check(token_id, f"/pool/{raw.get('poolid')}", "Pool.Allocate")
    elif route.op in VM_PRIVS:
        perms.check(token_id, f"/vms/{raw.get('vmid')}", VM_PRIVS[route.op])
