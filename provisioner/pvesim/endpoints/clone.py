"""``POST .../clone``: checks are synchronous, the copy runs in the ``qmclone`` worker.

While the worker runs, the new VMID holds a temporary config with only ``lock: clone`` on the
source node; a failed worker removes it again, as PVE does.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

from provisioner.pvesim.core.qemu_conf import (
    DISK_KEY_RE,
    gen_mac,
    is_cdrom,
    is_net_key,
    replace_smbios_uuid,
    volume_of,
)
from provisioner.pvesim.core.records import (
    Action,
    FaultRecord,
    Params,
    TaskRecord,
    VmConfig,
    VmRecord,
)
from provisioner.pvesim.core.store import ClusterStore
from provisioner.pvesim.core.tasks import TaskEngine
from provisioner.pvesim.core.topology import new_vm_record
from provisioner.pvesim.errors import SimError, TaskError
from provisioner.pvesim.property_strings import FormatError, format_net, parse_net


def _clone_net(value: Any) -> Any:
    """The same NIC with a new MAC (kept as is when it does not parse)."""
    try:
        net = parse_net(str(value))
    except FormatError:
        return value
    net["macaddr"] = gen_mac()
    return format_net(net)


def _clone_disk(value: Any, newid: int, p: Params, full: bool, index: int) -> tuple[Any, bool]:
    """The new drive value, and whether it took a new disk index."""
    vol, opts = volume_of(str(value))
    storage = vol.split(":", 1)[0]
    if "cloudinit" in vol:
        return ",".join([f"{storage}:vm-{newid}-cloudinit", *opts]), False
    if is_cdrom(str(value)):
        return value, False
    if full:
        newvol = f"{p.get('storage') or storage}:vm-{newid}-disk-{index}"
    else:
        newvol = f"{vol}/vm-{newid}-disk-{index}"
    return ",".join([newvol, *opts]), True


def _fresh_identity(conf: VmConfig, src: VmRecord, p: Params) -> None:
    """A clone never shares the SMBIOS uuid or vmgenid; it gets its name and description."""
    old = src["config"]
    conf["smbios1"] = replace_smbios_uuid(old.get("smbios1"))
    if old.get("vmgenid"):
        conf["vmgenid"] = str(uuid.uuid4())
    conf["name"] = p.get("name") or f"Copy-of-VM-{old.get('name', src['vmid'])}"
    if p.get("description"):
        conf["description"] = p["description"]


def clone_config(src: VmRecord, newid: int, p: Params, full: bool) -> VmConfig:
    """The config the clone will have once its worker finished."""
    conf: VmConfig = {}
    disk_index = 0
    for key, value in src["config"].items():
        if key in ("lock", "template", "digest") or key.startswith("unused"):
            continue
        if is_net_key(key):
            conf[key] = _clone_net(value)
        elif DISK_KEY_RE.match(key):
            conf[key], used = _clone_disk(value, newid, p, full, disk_index)
            disk_index += used
        else:
            conf[key] = value
    _fresh_identity(conf, src, p)
    return conf


def _clone_kind(src: VmRecord, p: Params, node: str) -> bool:
    """Whether the clone is full; refuses what PVE refuses for linked clones."""
    is_template = bool(src["config"].get("template"))
    full = bool(p["full"]) if "full" in p else not is_template
    if not full and not is_template:
        raise SimError(500, "parameter 'full' must be set for a non-template VM - "
                            "linked clones need a template")
    if not full and ("storage" in p or "format" in p):
        raise SimError(400, "Parameter verification failed.",
                       {"storage": "option is only allowed for full clones"})
    target = p.get("target")
    if target is not None and target != node and not full:
        raise SimError(500, "Linked clone feature for target node is not supported on "
                            "non-shared storage")
    return full


def _log_drives(task: TaskRecord, src: VmRecord, newconf: VmConfig, full: bool) -> None:
    kind = "full" if full else "linked"
    for key in sorted(newconf):
        if DISK_KEY_RE.match(key) and key in src["config"]:
            task["log"].append(f"create {kind} clone of drive {key} "
                               f"({volume_of(str(src['config'][key]))[0]})")


class Clones:
    def __init__(self, store: ClusterStore, tasks: TaskEngine) -> None:
        self.store = store
        self.tasks = tasks

    def _check_destination(self, p: Params) -> None:
        target, pool = p.get("target"), p.get("pool")
        if target is not None and target not in self.store.state["nodes"]:
            raise SimError(500, f"no such cluster node '{target}'")
        if pool is not None and pool not in self.store.state["pools"]:
            raise SimError(500, f"pool '{pool}' does not exist")

    def _check_source(self, src: VmRecord, newid: int) -> None:
        if src["config"].get("lock"):
            raise SimError(500, f"VM is locked ({src['config']['lock']})")
        if str(newid) in self.store.vms():
            raise SimError(500, f"unable to create VM {newid}: config file already exists")

    def clone(self, token_id: str, node: str, vmid: int, p: Params,
              fault: FaultRecord | None = None) -> str:
        with self.store.lock:
            self.store.check_node(node)
            newid = int(p["newid"])
            src = self.store.vm_on(node, vmid)
            self._check_destination(p)
            full = _clone_kind(src, p, node)
            self._check_source(src, newid)
            newconf = clone_config(src, newid, p, full)
            # the worker writes a temporary config holding only the lock, on the source node
            self.store.vms()[str(newid)] = new_vm_record(newid, node, {"lock": "clone"},
                                                         pool=None)
            action = {"op": "clone", "vmid": vmid, "newid": newid, "config": newconf,
                      "target": p.get("target") or node, "pool": p.get("pool")}
            upid = self.tasks.start(token_id, node, "qmclone", str(vmid),
                                    self.store.cfg.clone_seconds, action, fault)
            _log_drives(self.store.state["tasks"][upid], src, newconf, full)
            self.store.save()
            return upid

    def run_task(self, task: TaskRecord, action: Action) -> None:
        vm = self.store.get_vm(action["newid"])
        if vm is None:
            raise TaskError(f"unable to create VM {action['newid']}: config file vanished")
        vm["config"] = copy.deepcopy(action["config"])
        vm["node"] = action["target"]
        src = self.store.get_vm(action["vmid"])
        if src is not None and "firewall" in src:  # PVE copies the source's .fw file
            vm["firewall"] = copy.deepcopy(src["firewall"])
        if action["pool"]:
            vm["pool"] = action["pool"]
        task["log"].append("transferred 2.0 GiB of 2.0 GiB (100.00%)")

    def on_failure(self, action: Action, exitstatus: str) -> str:
        """PVE frees the new volumes and unlinks the temporary config, then dies."""
        vm = self.store.get_vm(action["newid"])
        if vm is not None and vm["config"].get("lock") == "clone" and len(vm["config"]) == 1:
            del self.store.vms()[str(action["newid"])]
        if not exitstatus.startswith("clone failed:"):
            exitstatus = f"clone failed: {exitstatus}"
        return exitstatus
