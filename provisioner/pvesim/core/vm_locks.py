"""A VM's config lock (``lock: clone``, ``backup``, ...), checked now or inside a worker.

Checked synchronously the refusal is an HTTP 500; inside a task worker it becomes the task's
exit status, which is where PVE checks it for power, destroy and resize.
"""

from __future__ import annotations

from provisioner.pvesim.core.records import Action, TaskRecord, VmRecord
from provisioner.pvesim.core.store import ClusterStore
from provisioner.pvesim.errors import SimError, TaskError


def check_lock(vm: VmRecord, skiplock: bool) -> None:
    lock = vm["config"].get("lock")
    if lock and not skiplock:
        raise SimError(500, f"VM is locked ({lock})")


def worker_vm(store: ClusterStore, task: TaskRecord, action: Action) -> VmRecord:
    """The task's VM, still on the task's node; TaskError when gone, moved or locked."""
    vmid = action["vmid"]
    vm = store.get_vm(vmid)
    if vm is None or vm["node"] != task["node"]:
        raise TaskError(f"Configuration file 'nodes/{task['node']}/qemu-server/{vmid}.conf' "
                        "does not exist")
    lock = vm["config"].get("lock")
    if lock and not action.get("skiplock"):
        raise TaskError(f"VM is locked ({lock})")
    return vm
