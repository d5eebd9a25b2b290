"""The UPID task engine: start a worker task, finish it when due, report its status and log.

Tasks finish when their deadline passes (checked by a ticker thread and on every request);
their effects are applied at that moment by the operation's worker, so errors that PVE raises
inside a worker surface as a failed task, never as an HTTP error. Workers are registered per
operation by the simulator.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from provisioner.pvesim.core.records import Action, Entry, FaultRecord, TaskFault, TaskRecord
from provisioner.pvesim.core.store import ClusterStore
from provisioner.pvesim.core.topology import now
from provisioner.pvesim.errors import SimError, TaskError

DEFAULT_TASK_FAILURES = {
    "clone": "can't lock file '/var/lock/qemu-server/lock-{newid}.conf' - got timeout",
    "config_post": "can't lock file '/var/lock/qemu-server/lock-{vmid}.conf' - got timeout",
    "resize": "can't lock file '/var/lock/qemu-server/lock-{vmid}.conf' - got timeout",
    "start": "start failed: QEMU exited with code 1",
    "shutdown": "VM quit/powerdown failed - got timeout",
    "stop": "can't lock file '/var/lock/qemu-server/lock-{vmid}.conf' - got timeout",
    "destroy": "error with cfs lock 'storage-local-lvm': got lock request timeout",
    "create": "error with cfs lock 'storage-local-lvm': got lock request timeout",
    "template": "can't lock file '/var/lock/qemu-server/lock-{vmid}.conf' - got timeout",
}


def _keep_status(action: Action, exitstatus: str) -> str:
    return exitstatus


@dataclass(frozen=True)
class Worker:
    """What a task of one operation does when it finishes.

    ``run`` applies the effect (raising TaskError to fail); ``on_failure`` undoes what PVE
    undoes after a failed worker and returns the exit status to report."""

    run: Callable[[TaskRecord, Action], None]
    on_failure: Callable[[Action, str], str] = _keep_status


def task_view(task: TaskRecord) -> Entry:
    """A task as ``/nodes/{node}/tasks/{upid}/status`` shows it."""
    user, _, tokenid = task["user"].partition("!")
    view: Entry = {"upid": task["upid"], "node": task["node"], "pid": task["pid"],
                   "pstart": task["pstart"], "starttime": task["starttime"],
                   "type": task["type"], "id": task["id"], "status": task["status"]}
    view["user"] = user
    if tokenid:
        view["tokenid"] = tokenid
    if task["status"] == "stopped":
        view["exitstatus"] = task["exitstatus"]
    return view


def _task_fault(fault: FaultRecord | None, action: Action) -> TaskFault | None:
    """What a ``fail_task`` or ``hang`` fault does to the task (None: nothing)."""
    if fault is None or fault["mode"] not in ("fail_task", "hang"):
        return None
    msg = fault.get("message") or DEFAULT_TASK_FAILURES.get(action["op"], "task failed")
    return {"mode": fault["mode"],
            "message": msg.format(vmid=action.get("vmid"), newid=action.get("newid"))}


def _is_due(task: TaskRecord, t: float) -> bool:
    """Running, past its deadline, and not held by a ``hang`` fault."""
    if task["status"] != "running" or task["end_at"] > t:
        return False
    fault = task.get("fault")
    return not (fault and fault["mode"] == "hang")


class TaskEngine:
    """Every task of the cluster; ``workers`` maps an operation to its Worker."""

    def __init__(self, store: ClusterStore) -> None:
        self.store = store
        self.workers: dict[str, Worker] = {}

    def start(self, token_id: str, node: str, ttype: str, tid: str, duration: float,
              action: Action, fault: FaultRecord | None = None) -> str:
        """Record a running task and return its UPID (the caller saves the state)."""
        state = self.store.state
        state["pid_counter"] += random.randint(1, 17)
        pid = state["pid_counter"]
        nodeinfo = state["nodes"][node]
        pstart = int((now() - nodeinfo.get("booted", now())) * 100) + 1000
        starttime = int(now())
        if fault is not None and fault["mode"] == "slow_task":
            duration = float(fault["seconds"])
        upid = (f"UPID:{node}:{pid:08X}:{pstart:08X}:{starttime:08X}:{ttype}:{tid}:"
                f"{token_id}:")
        state["tasks"][upid] = {
            "upid": upid, "node": node, "pid": pid, "pstart": pstart, "starttime": starttime,
            "type": ttype, "id": tid, "user": token_id, "status": "running",
            "end_at": now() + duration, "action": action, "log": [],
            "fault": _task_fault(fault, action),
        }
        return upid

    def tick(self) -> None:
        """Finish every task whose deadline has passed (called by a ticker and per request)."""
        with self.store.lock:
            t = now()
            changed = False
            tasks = self.store.state["tasks"].values()
            for task in sorted(tasks, key=lambda x: x["end_at"]):
                if _is_due(task, t):
                    self._finish(task)
                    changed = True
            if changed:
                self.store.save()

    def _finish(self, task: TaskRecord, forced_exit: str | None = None) -> None:
        action = task["action"]
        try:
            self._run(task, forced_exit)
            exitstatus = "OK"
        except TaskError as exc:
            exitstatus = self.workers[action["op"]].on_failure(action, str(exc))
        task["status"] = "stopped"
        task["exitstatus"] = exitstatus
        task["endtime"] = int(now())
        task["log"].append("TASK OK" if exitstatus == "OK" else f"TASK ERROR: {exitstatus}")

    def _run(self, task: TaskRecord, forced_exit: str | None) -> None:
        """The worker's effect, unless a forced exit or a ``fail_task`` fault fails it first."""
        fault = task.get("fault")
        if forced_exit is not None and forced_exit != "OK":
            raise TaskError(forced_exit)
        if fault and fault["mode"] == "fail_task" and forced_exit is None:
            raise TaskError(fault["message"])
        self.workers[task["action"]["op"]].run(task, task["action"])

    def finish(self, upid: str, exitstatus: str = "OK") -> Entry:
        """Control API: end a (hung) task now, with success or the given error text."""
        with self.store.lock:
            task = self.store.state["tasks"].get(upid)
            if task is None:
                raise SimError(404, "no such task")
            if task["status"] == "running":
                if exitstatus == "OK":
                    task["fault"] = None
                    self._finish(task)
                else:
                    self._finish(task, forced_exit=exitstatus)
                self.store.save()
            return task_view(task)

    def _on_node(self, node: str, upid: str) -> TaskRecord:
        self.store.check_node(node)
        task = self.store.state["tasks"].get(upid)
        if task is None or task["node"] != node:
            raise SimError(500, f"task '{upid}' does not exist")
        return task

    def status(self, token_id: str, node: str, upid: str) -> Entry:
        with self.store.lock:
            return task_view(self._on_node(node, upid))

    def log(self, token_id: str, node: str, upid: str, start: int = 0,
            limit: int = 50) -> list[Entry]:
        with self.store.lock:
            task = self._on_node(node, upid)
            lines = task["log"] or ["no content"]
            if task["status"] == "running":
                lines = task["log"] or []
            out: list[Entry] = [{"n": i + 1, "t": t} for i, t in enumerate(lines)]
            return out[start:start + limit] if limit else out[start:]
