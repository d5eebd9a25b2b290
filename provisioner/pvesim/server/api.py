"""One PVE API request, from headers and body to the simulator operation's answer.

The order is PVE's: authenticate (401), find the route (501), check privileges (403), verify
parameters (400), then call the operation. Injected faults act around the call.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from provisioner.pvesim.core.faults import TASK_OPS
from provisioner.pvesim.core.records import FaultRecord, Params
from provisioner.pvesim.endpoints.access import effective_permissions
from provisioner.pvesim.errors import DropConnection, SimError
from provisioner.pvesim.param_verify import ParamError, verify
from provisioner.pvesim.server.auth import authenticate
from provisioner.pvesim.server.routes import check_permissions, match_route
from provisioner.pvesim.simulator import Simulator


@dataclass(frozen=True)
class ApiRequest:
    """What the HTTP layer hands over: method, path below ``/api2/json``, query, body."""

    method: str
    rel: str
    query: str
    body: bytes
    authorization: str | None
    content_type: str | None


@dataclass(frozen=True)
class Call:
    """A verified call of one operation: who asks, with which parameters, under which fault."""

    token_id: str
    p: Params
    fault: FaultRecord | None

    @property
    def node(self) -> Any:
        return self.p["node"]

    @property
    def vmid(self) -> Any:
        return self.p["vmid"]


_Handler = Callable[[Simulator, Call], object]

HANDLERS: dict[str, _Handler] = {
    "version": lambda s, c: s.cluster.version(),
    "access_permissions": lambda s, c: effective_permissions(s.perms, c.token_id,
                                                             c.p.get("path"), c.p.get("userid")),
    "nodes": lambda s, c: s.cluster.nodes(),
    "cluster_resources": lambda s, c: s.cluster.cluster_resources(c.token_id, c.p.get("type")),
    "nextid": lambda s, c: s.cluster.nextid(c.p.get("vmid")),
    "pools": lambda s, c: s.pools.pools(c.token_id, c.p.get("poolid")),
    "pool": lambda s, c: s.pools.pool(c.token_id, c.p["poolid"]),
    "pool_update": lambda s, c: s.pools.update(c.token_id, c.p["poolid"], c.p),
    "vm_list": lambda s, c: s.vm_reads.vm_list(c.token_id, c.node),
    "vm_index": lambda s, c: s.vm_reads.vm_index(c.token_id, c.node, c.vmid),
    "destroy": lambda s, c: s.destroys.destroy(c.token_id, c.node, c.vmid, c.p, c.fault),
    "clone": lambda s, c: s.clones.clone(c.token_id, c.node, c.vmid, c.p, c.fault),
    "create": lambda s, c: s.creates.qm_create(c.token_id, c.node, c.p, c.fault),
    "template": lambda s, c: s.templates.qm_template(c.token_id, c.node, c.vmid, c.p, c.fault),
    "config_get": lambda s, c: s.vm_reads.config_get(c.token_id, c.node, c.vmid),
    "config_put": lambda s, c: s.configs.config_update(c.token_id, c.node, c.vmid, c.p,
                                                       background=False, fault=c.fault),
    "config_post": lambda s, c: s.configs.config_update(c.token_id, c.node, c.vmid, c.p,
                                                        background=True, fault=c.fault),
    "resize": lambda s, c: s.resizes.resize(c.token_id, c.node, c.vmid, c.p, c.fault),
    "status_current": lambda s, c: s.vm_reads.status_current(c.token_id, c.node, c.vmid),
    "start": lambda s, c: s.power.power(c.token_id, c.node, c.vmid, "start", c.p, c.fault),
    "shutdown": lambda s, c: s.power.power(c.token_id, c.node, c.vmid, "shutdown", c.p,
                                           c.fault),
    "stop": lambda s, c: s.power.power(c.token_id, c.node, c.vmid, "stop", c.p, c.fault),
    "agent_ping": lambda s, c: s.vm_reads.agent_ping(c.token_id, c.node, c.vmid),
    "fw_options_get": lambda s, c: s.firewalls.options_get(c.node, c.vmid),
    "fw_options_put": lambda s, c: s.firewalls.options_put(c.node, c.vmid, c.p),
    "fw_ipset_list": lambda s, c: s.firewalls.ipset_list(c.node, c.vmid),
    "fw_ipset_create": lambda s, c: s.firewalls.ipset_create(c.node, c.vmid, c.p),
    "fw_ipset_get": lambda s, c: s.firewalls.ipset_get(c.node, c.vmid, c.p["name"]),
    "fw_ipset_add": lambda s, c: s.firewalls.ipset_add(c.node, c.vmid, c.p["name"], c.p),
    "fw_ipset_delete": lambda s, c: s.firewalls.ipset_delete(c.node, c.vmid, c.p["name"], c.p),
    "fw_ipset_remove": lambda s, c: s.firewalls.ipset_remove(c.node, c.vmid, c.p["name"],
                                                             c.p),
    "task_status": lambda s, c: s.tasks.status(c.token_id, c.node, c.p["upid"]),
    "task_log": lambda s, c: s.tasks.log(c.token_id, c.node, c.p["upid"], c.p.get("start", 0),
                                         c.p.get("limit", 50)),
}


def _json_body(body: bytes) -> dict[str, Any]:
    try:
        decoded = json.loads(body)
    except ValueError:
        raise SimError(400, "invalid JSON body") from None
    if not isinstance(decoded, dict):
        raise SimError(400, "invalid JSON body")
    return {k: v for k, v in decoded.items() if v is not None}


def raw_params(req: ApiRequest, path_params: dict[str, str]) -> dict[str, Any]:
    """Query, then body (form-encoded or JSON), then path parameters: later ones win."""
    raw: dict[str, Any] = dict(parse_qsl(req.query, keep_blank_values=True))
    if req.method in ("POST", "PUT") and req.body:
        ctype = (req.content_type or "").split(";")[0].strip().lower()
        if ctype == "application/json":
            raw.update(_json_body(req.body))
        else:
            raw.update(parse_qsl(req.body.decode("utf-8", "replace"), keep_blank_values=True))
    raw.update(path_params)
    return raw


def before_call(fault: FaultRecord | None, op: str) -> FaultRecord | None:
    """Apply a fault's effect on the exchange; return it if it still acts on the call."""
    if fault is None:
        return None
    mode = fault["mode"]
    if mode == "http_error":
        raise SimError(fault["status"], fault.get("message") or "simulated failure")
    if mode == "latency":
        time.sleep(fault["seconds"])
        return None
    if mode == "hang" and op not in TASK_OPS:
        time.sleep(fault["seconds"])
        raise DropConnection()
    return fault


def serve_api(sim: Simulator, token: tuple[str, str], req: ApiRequest) -> object:
    """The ``data`` of the answer; raises SimError (or DropConnection for a fault)."""
    sim.tick()
    token_id = authenticate(req.authorization, *token)
    route, path_params = match_route(req.method, req.rel.rstrip("/") or "/")
    raw = raw_params(req, path_params)
    check_permissions(sim.perms, token_id, route, raw)
    try:
        p = verify(req.method, route.template, raw)
    except ParamError as exc:
        raise SimError(400, "Parameter verification failed.", exc.errors) from None
    fault = sim.faults.take(route.op, vmid=p.get("vmid"), node=p.get("node"),
                            newid=p.get("newid"))
    fault = before_call(fault, route.op)
    result = HANDLERS[route.op](sim, Call(token_id, p, fault))
    if fault is not None and fault["mode"] == "drop_connection":
        raise DropConnection()
    return result
