"""``DELETE /nodes/{node}/qemu/{vmid}``: refused for protected or running VMs, else a
``qmdestroy`` task that removes the disks and the config."""

from __future__ import annotations

from provisioner.pvesim.core.permissions import check_skiplock
from provisioner.pvesim.core.qemu_conf import DISK_KEY_RE, is_cdrom
from provisioner.pvesim.core.records import Action, FaultRecord, Params, TaskRecord
from provisioner.pvesim.core.store import ClusterStore
from provisioner.pvesim.core.tasks import TaskEngine
from provisioner.pvesim.core.vm_locks import worker_vm
from provisioner.pvesim.errors import SimError, TaskError


class Destroys:
    def __init__(self, store: ClusterStore, tasks: TaskEngine) -> None:
        self.store = store
        self.tasks = tasks

    def destroy(self, token_id: str, node: str, vmid: int, p: Params,
                fault: FaultRecord | None = None) -> str:
        with self.store.lock:
            self.store.check_node(node)
            vm = self.store.vm_on(node, vmid)
            skiplock = check_skiplock(token_id, p)
            if vm["config"].get("protection"):
                raise SimError(500, f"can't remove VM {vmid} - protection mode enabled")
            if vm["status"] == "running":
                raise SimError(500, f"VM {vmid} is running - destroy failed")
            action = {"op": "destroy", "vmid": vmid, "skiplock": skiplock,
                      "purge": bool(p.get("purge"))}
            upid = self.tasks.start(token_id, node, "qmdestroy", str(vmid),
                                    self.store.cfg.task_seconds, action, fault)
            self.store.save()
            return upid

    def run_task(self, task: TaskRecord, action: Action) -> None:
        vm = worker_vm(self.store, task, action)
        if vm["status"] == "running":
            raise TaskError(f"VM {action['vmid']} is running - destroy failed")
        for key, value in sorted(vm["config"].items()):
            if DISK_KEY_RE.match(key) and not is_cdrom(str(value)):
                task["log"].append("Removing image: 100% complete...done.")
        task["log"].append(f"purging VM {action['vmid']} from related configurations..")
        del self.store.vms()[str(action["vmid"])]
