"""``PUT .../resize``: a ``resize`` task that grows one disk (PVE checks everything inside it)."""

from __future__ import annotations

from provisioner.pvesim.core.permissions import check_skiplock
from provisioner.pvesim.core.qemu_conf import (
    config_digest,
    disk_size,
    format_size,
    is_cdrom,
    parse_size,
    volume_of,
)
from provisioner.pvesim.core.records import Action, FaultRecord, Params, TaskRecord, VmRecord
from provisioner.pvesim.core.store import ClusterStore
from provisioner.pvesim.core.tasks import TaskEngine
from provisioner.pvesim.core.vm_locks import worker_vm
from provisioner.pvesim.errors import TaskError


def _new_size(current: int, text: str) -> int:
    """``+<delta>`` grows, ``<size>`` sets; shrinking is refused."""
    delta = parse_size(text.lstrip("+"))
    newsize = current + delta if text.startswith("+") else delta
    if newsize < current:
        raise TaskError("shrinking disks is not supported")
    return newsize


class Resizes:
    def __init__(self, store: ClusterStore, tasks: TaskEngine) -> None:
        self.store = store
        self.tasks = tasks

    def resize(self, token_id: str, node: str, vmid: int, p: Params,
               fault: FaultRecord | None = None) -> str:
        with self.store.lock:
            self.store.check_node(node)
            self.store.vm_on(node, vmid)
            skiplock = check_skiplock(token_id, p)
            action = {"op": "resize", "vmid": vmid, "disk": p["disk"], "size": p["size"],
                      "digest": p.get("digest"), "skiplock": skiplock}
            upid = self.tasks.start(token_id, node, "resize", str(vmid),
                                    self.store.cfg.task_seconds, action, fault)
            self.store.save()
            return upid

    def _vm(self, task: TaskRecord, action: Action) -> VmRecord:
        """The VM, unlocked (or skiplock) and unchanged since the digest the caller read."""
        vm = worker_vm(self.store, task, action)
        if action["digest"] and action["digest"] != config_digest(vm["config"]):
            raise TaskError("detected modified configuration - file changed by other user? "
                            "Try again.")
        return vm

    def run_task(self, task: TaskRecord, action: Action) -> None:
        vm = self._vm(task, action)
        disk = action["disk"]
        value = vm["config"].get(disk)
        if value is None:
            raise TaskError(f"disk '{disk}' does not exist")
        if is_cdrom(str(value)):
            raise TaskError("you can't resize a cdrom")
        size = disk_size(str(value))
        if size is None:
            raise TaskError("unable to parse current disk size")
        newsize = _new_size(size, action["size"])
        if newsize == size:
            return
        vol, opts = volume_of(str(value))
        opts = [o for o in opts if not o.startswith("size=")] + [f"size={format_size(newsize)}"]
        vm["config"][disk] = ",".join([vol, *opts])
        task["log"].append(f"Image resized to {format_size(newsize)}.")
