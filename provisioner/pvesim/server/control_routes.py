"""The control API (``/_sim/...``, plain JSON, no auth; loopback clients only).

``GET /_sim/state``; ``GET|POST|DELETE /_sim/faults``; ``POST /_sim/vms`` (a VM made behind the
API's back, e.g. a foreign one); ``POST|DELETE /_sim/vms/{vmid}`` (out-of-band edits: lock,
pool, status, config); ``POST /_sim/nodes/{node}`` (online/offline, capacity);
``POST /_sim/tasks/{upid}/finish``; ``POST /_sim/reset``. Fault specs: see
:mod:`provisioner.pvesim.core.faults`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from provisioner.pvesim.errors import SimError
from provisioner.pvesim.simulator import Simulator

#: an endpoint: (simulator, decoded JSON body) -> answer
_Endpoint = Callable[[Simulator, Any], object]


def _add_faults(sim: Simulator, data: Any) -> object:
    """One fault object, or ``{"faults": [...]}``; answers what was added."""
    specs = data["faults"] if isinstance(data, dict) and "faults" in data else [data]
    if not all(isinstance(s, dict) for s in specs):
        raise SimError(400, "a fault is a JSON object")
    added = [sim.faults.add(s) for s in specs]
    return added[0] if len(added) == 1 else added


def _clear_faults(sim: Simulator, data: Any) -> object:
    sim.faults.clear()
    return {"cleared": True}


def _reset(sim: Simulator, data: Any) -> object:
    sim.control.reset()
    return {"reset": True}


_FIXED: dict[tuple[str, str], _Endpoint] = {
    ("GET", "state"): lambda sim, data: sim.control.snapshot(),
    ("GET", "faults"): lambda sim, data: sim.control.snapshot()["faults"],
    ("POST", "faults"): _add_faults,
    ("DELETE", "faults"): _clear_faults,
    ("POST", "vms"): lambda sim, data: sim.control.create_vm(data),
    ("POST", "reset"): _reset,
}


def _vm_endpoint(method: str, vmid_text: str) -> _Endpoint:
    try:
        vmid = int(vmid_text)
    except ValueError:
        raise SimError(400, "vmid must be an integer") from None
    if method == "POST":
        return lambda sim, data: sim.control.update_vm(vmid, data)

    def delete(sim: Simulator, data: Any) -> object:
        sim.control.delete_vm(vmid)
        return {"deleted": vmid}

    return delete


def _endpoint(method: str, parts: list[str]) -> _Endpoint | None:
    if len(parts) == 1:
        return _FIXED.get((method, parts[0]))
    if len(parts) == 2 and parts[0] == "vms" and method in ("POST", "DELETE"):
        return _vm_endpoint(method, parts[1])
    if len(parts) == 2 and parts[0] == "nodes" and method == "POST":
        return lambda sim, data: sim.control.set_node(parts[1], data)
    if len(parts) == 3 and parts[0] == "tasks" and parts[2] == "finish" and method == "POST":
        return lambda sim, data: sim.tasks.finish(parts[1], str(data.get("exitstatus", "OK")))
    return None


def serve_control(sim: Simulator, method: str, path: str, body: bytes) -> object:
    """The answer to a control request (the caller checked it comes from loopback)."""
    sim.tick()
    try:
        data: Any = json.loads(body) if body else {}
    except ValueError:
        raise SimError(400, "control API expects a JSON body") from None
    parts = [unquote(p) for p in path.strip("/").split("/")[1:]]
    endpoint = _endpoint(method, parts)
    if endpoint is None:
        raise SimError(404, f"no control endpoint {method} {path}")
    return endpoint(sim, data)
