"""``POST .../template``: checks and ``template: 1`` are synchronous; renaming the disks to
base volumes runs in the ``qmtemplate`` worker."""

from __future__ import annotations

from provisioner.pvesim.core.qemu_conf import DISK_KEY_RE, is_cdrom, volume_of
from provisioner.pvesim.core.records import Action, FaultRecord, Params, TaskRecord
from provisioner.pvesim.core.store import ClusterStore
from provisioner.pvesim.core.tasks import TaskEngine
from provisioner.pvesim.core.vm_locks import check_lock
from provisioner.pvesim.errors import SimError, TaskError


class Templates:
    def __init__(self, store: ClusterStore, tasks: TaskEngine) -> None:
        self.store = store
        self.tasks = tasks

    def qm_template(self, token_id: str, node: str, vmid: int, p: Params,
                    fault: FaultRecord | None = None) -> str:
        with self.store.lock:
            self.store.check_node(node)
            vm = self.store.vm_on(node, vmid)
            check_lock(vm, False)
            if vm["config"].get("template") and not p.get("disk"):
                raise SimError(500, "you can't convert a template to a template")
            if vm["status"] == "running":
                raise SimError(500, "you can't convert a VM to template if VM is running")
            vm["config"]["template"] = 1
            action = {"op": "template", "vmid": vmid, "disk": p.get("disk")}
            upid = self.tasks.start(token_id, node, "qmtemplate", str(vmid),
                                    self.store.cfg.task_seconds, action, fault)
            self.store.save()
            return upid

    def run_task(self, task: TaskRecord, action: Action) -> None:
        vmid = action["vmid"]
        vm = self.store.get_vm(vmid)
        if vm is None:
            raise TaskError(f"Configuration file 'nodes/{task['node']}/qemu-server/"
                            f"{vmid}.conf' does not exist")
        for key, value in sorted(vm["config"].items()):
            if not DISK_KEY_RE.match(key) or is_cdrom(str(value)):
                continue
            if action["disk"] and key != action["disk"]:
                continue
            vol, opts = volume_of(str(value))
            base = vol.replace(f"vm-{vmid}-disk-", f"base-{vmid}-disk-")
            vm["config"][key] = ",".join([base, *opts])
            task["log"].append(f"renamed volume '{vol}' to '{base}'")
