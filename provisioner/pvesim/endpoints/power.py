"""``POST .../status/{start,shutdown,stop}``: power tasks, and what a guest does at boot.

The lock, a missing bridge and missing cicustom snippets fail the task, as on PVE. A guest that
ignores ACPI lets a shutdown time out unless ``forceStop`` is set.
"""

from __future__ import annotations

import random

from provisioner.pvesim.core.permissions import check_skiplock
from provisioner.pvesim.core.pve_storage import read_cicustom
from provisioner.pvesim.core.qemu_conf import is_net_key
from provisioner.pvesim.core.records import (
    Action,
    BootInfo,
    FaultRecord,
    Params,
    TaskRecord,
    VmRecord,
)
from provisioner.pvesim.core.store import ClusterStore
from provisioner.pvesim.core.tasks import TaskEngine
from provisioner.pvesim.core.topology import now
from provisioner.pvesim.core.vm_locks import worker_vm
from provisioner.pvesim.errors import TaskError
from provisioner.pvesim.property_strings import FormatError, parse_net

_TASK_TYPES = {"start": "qmstart", "shutdown": "qmshutdown", "stop": "qmstop"}


def _stopped(vm: VmRecord) -> None:
    vm["status"] = "stopped"
    vm["started_at"] = None
    vm["pid"] = None


class Power:
    def __init__(self, store: ClusterStore, tasks: TaskEngine) -> None:
        self.store = store
        self.tasks = tasks

    def power(self, token_id: str, node: str, vmid: int, action_name: str, p: Params,
              fault: FaultRecord | None = None) -> str:
        with self.store.lock:
            self.store.check_node(node)
            vm = self.store.vm_on(node, vmid)
            skiplock = check_skiplock(token_id, p)
            duration = self.store.cfg.task_seconds
            if action_name == "shutdown" and vm["status"] == "running" \
                    and not vm["guest"].get("acpi", True):
                duration = float(p.get("timeout", 60))
            action = {"op": action_name, "vmid": vmid, "skiplock": skiplock,
                      "force_stop": bool(p.get("forceStop")),
                      "timeout": p.get("timeout")}
            upid = self.tasks.start(token_id, node, _TASK_TYPES[action_name], str(vmid),
                                    duration, action, fault)
            self.store.save()
            return upid

    def _check_bridges(self, vm: VmRecord) -> None:
        for key, value in vm["config"].items():
            if not is_net_key(key):
                continue
            try:
                bridge = parse_net(str(value)).get("bridge")
            except FormatError:
                continue
            if bridge and bridge not in self.store.cfg.bridges:
                raise TaskError(f"bridge '{bridge}' does not exist")

    def run_start(self, task: TaskRecord, action: Action) -> None:
        vm = worker_vm(self.store, task, action)
        if vm["config"].get("template"):
            raise TaskError("you can't start a vm if it's a template")
        if vm["status"] == "running":
            raise TaskError(f"VM {action['vmid']} already running")
        self._check_bridges(vm)
        boot: BootInfo = {"at": now(), "user_data": None}
        cicustom = vm["config"].get("cicustom")
        if cicustom:
            read_cicustom(self.store.cfg.snippets_dir, str(cicustom), boot)
        vm["status"] = "running"
        vm["started_at"] = now()
        vm["pid"] = random.randint(1000, 999999)
        vm["boot"] = boot
        vm["boots"] = int(vm.get("boots", 0)) + 1

    def run_shutdown(self, task: TaskRecord, action: Action) -> None:
        vm = worker_vm(self.store, task, action)
        if vm["status"] != "running":
            return
        if not vm["guest"].get("acpi", True):
            if not action["force_stop"]:
                raise TaskError("VM quit/powerdown failed - got timeout")
            task["log"].append("VM quit/powerdown failed - terminating now with SIGTERM")
        _stopped(vm)

    def run_stop(self, task: TaskRecord, action: Action) -> None:
        vm = worker_vm(self.store, task, action)
        if vm["status"] != "running":
            return
        _stopped(vm)
