"""Fault-injection rules: which API call fails how, how often; kept in the state file.

A fault is ``{"op": <endpoint op or "*">, "mode": ..., "count": N, "skip": N, "vmid"/"newid"/
"node": filters, "message", "status", "seconds"}`` with mode one of ``http_error`` (status +
message in the reason phrase, before any side effect; e.g. 500/503/595), ``fail_task`` (the
UPID task ends with ``message``, after PVE's own cleanup), ``hang`` (the task never ends until
finished over the control API), ``slow_task`` (the task takes ``seconds``), ``drop_connection``
(side effect done, answer never sent) and ``latency``. Faults live in the state file, so they
survive a restart. ``count`` 0 means "every time".
"""

from __future__ import annotations

from typing import Any

from provisioner.pvesim.core.records import FaultRecord
from provisioner.pvesim.core.store import ClusterStore
from provisioner.pvesim.errors import SimError

#: fault-injection operation names (one per API endpoint the simulator serves)
OPS = (
    "version", "nodes", "cluster_resources", "nextid", "pools", "pool", "pool_update", "vm_list",
    "vm_index",
    "clone", "config_get", "config_put", "config_post", "resize", "status_current", "start",
    "shutdown", "stop", "destroy", "agent_ping", "task_status", "task_log", "create", "template",
    "fw_options_get", "fw_options_put", "fw_ipset_list", "fw_ipset_create", "fw_ipset_get",
    "fw_ipset_add", "fw_ipset_delete", "fw_ipset_remove",
)
#: operations that return a UPID (``fail_task`` / ``hang`` act on their task)
TASK_OPS = ("clone", "config_post", "resize", "start", "shutdown", "stop", "destroy", "create",
            "template")
FAULT_MODES = ("http_error", "http_500", "fail_task", "hang", "drop_connection", "latency",
               "slow_task")
#: modes that act on the UPID task of a task op (not on the HTTP exchange)
TASK_FAULT_MODES = ("fail_task", "slow_task")
_FIELDS = {"op", "mode", "count", "skip", "message", "status", "seconds", "vmid", "node", "newid"}


def _validate(spec: dict[str, Any]) -> None:
    op, mode = spec.get("op"), spec.get("mode")
    if op != "*" and op not in OPS:
        raise SimError(400, f"unknown op {op!r}; one of: * {' '.join(OPS)}")
    if mode not in FAULT_MODES:
        raise SimError(400, f"unknown mode {mode!r}; one of: {' '.join(FAULT_MODES)}")
    if mode in TASK_FAULT_MODES and op not in TASK_OPS:
        raise SimError(400, f"mode {mode} needs a task op: {' '.join(TASK_OPS)}")
    unknown = set(spec) - _FIELDS
    if unknown:
        raise SimError(400, f"unknown fault fields: {sorted(unknown)}")


def _new_fault(fault_id: int, spec: dict[str, Any]) -> FaultRecord:
    mode = spec["mode"]
    return {
        "id": fault_id,
        "op": spec["op"],
        "mode": "http_error" if mode == "http_500" else mode,
        "count": int(spec.get("count", 1)),
        "skip": int(spec.get("skip", 0)),
        "message": spec.get("message"),
        "status": int(spec.get("status", 500)),
        "seconds": float(spec.get("seconds", 3600 if mode == "hang" else 1.0)),
        "vmid": spec.get("vmid"),
        "node": spec.get("node"),
        "newid": spec.get("newid"),
        "hits": 0,
    }


def _matches(fault: FaultRecord, op: str, vmid: int | None, node: str | None,
             newid: int | None) -> bool:
    if fault["op"] not in ("*", op):
        return False
    if fault["vmid"] is not None and int(fault["vmid"]) != vmid:
        return False
    if fault["newid"] is not None and int(fault["newid"]) != newid:
        return False
    if fault["node"] is not None and fault["node"] != node:
        return False
    return not (fault["mode"] in TASK_FAULT_MODES and op not in TASK_OPS)


class FaultRules:
    """The pending faults: added over the control API, taken by the API front end."""

    def __init__(self, store: ClusterStore) -> None:
        self.store = store

    def add(self, spec: dict[str, Any]) -> FaultRecord:
        _validate(spec)
        with self.store.lock:
            state = self.store.state
            fault = _new_fault(state["next_fault_id"], spec)
            state["next_fault_id"] += 1
            state["faults"].append(fault)
            self.store.save()
            return fault.copy()

    def clear(self) -> None:
        with self.store.lock:
            self.store.state["faults"] = []
            self.store.save()

    def take(self, op: str, *, vmid: int | None = None, node: str | None = None,
             newid: int | None = None) -> FaultRecord | None:
        """The first matching fault that is due (after its ``skip``), counted down."""
        with self.store.lock:
            for fault in list(self.store.state["faults"]):
                if not _matches(fault, op, vmid, node, newid):
                    continue
                if fault["skip"] > 0:
                    fault["skip"] -= 1
                    self.store.save()
                    continue
                self._consume(fault)
                return fault.copy()
            return None

    def _consume(self, fault: FaultRecord) -> None:
        fault["hits"] += 1
        if fault["count"] > 0:
            fault["count"] -= 1
            if fault["count"] == 0:
                self.store.state["faults"].remove(fault)
        self.store.save()
