"""``POST /nodes/{node}/qemu``: the early checks are synchronous, disk allocation and image
import run in the ``qmcreate`` worker while the config holds ``lock: create``."""

from __future__ import annotations

import random
import re
import uuid
from pathlib import Path
from typing import Any

from provisioner.pvesim.core.permissions import is_root
from provisioner.pvesim.core.pve_storage import STORAGES, import_size
from provisioner.pvesim.core.qemu_conf import DISK_KEY_RE, format_size, gen_mac, is_net_key
from provisioner.pvesim.core.records import Action, FaultRecord, Params, TaskRecord, VmConfig
from provisioner.pvesim.core.store import ClusterStore
from provisioner.pvesim.core.tasks import TaskEngine
from provisioner.pvesim.core.topology import new_vm_record, now
from provisioner.pvesim.errors import SimError, TaskError
from provisioner.pvesim.property_strings import (
    format_net,
    parse_net,
    parse_property_string,
    parse_tags,
)
from provisioner.pvesim.sim_config import GIB

#: request parameters that are not config keys
_NOT_CONFIG = ("node", "vmid", "pool", "start", "storage")


def _allocation(task: TaskRecord, vmid: int, opts: dict[str, str], rest: str,
                snippets_dir: Path | None) -> int | None:
    """Bytes to allocate for a new disk (imported or ``<storage>:<GiB>``); None: keep as is."""
    src = opts.pop("import-from", None)
    if src:
        size = import_size(snippets_dir, src)
        task["log"].append(f"importing disk '{src}' to VM {vmid} ...")
    elif re.fullmatch(r"\d+(\.\d+)?", rest):
        size = int(float(rest) * GIB)
    else:
        return None
    # PVE: a size of 0 without import-from allocates nothing useful
    return size if size > 0 else GIB


def _new_drive(task: TaskRecord, vmid: int, value: Any, index: int,
               snippets_dir: Path | None) -> tuple[Any, bool]:
    """The drive's stored value, and whether it allocated disk ``index``."""
    opts = parse_property_string(str(value), "file")
    storage, _, rest = opts.pop("file").partition(":")
    if storage not in STORAGES:
        raise TaskError(f"storage '{storage}' does not exist")
    if rest == "cloudinit":
        return f"{storage}:vm-{vmid}-cloudinit,media=cdrom", False
    if opts.get("media") == "cdrom":
        return value, False
    size = _allocation(task, vmid, opts, rest, snippets_dir)
    if size is None:
        return value, False
    opts.pop("size", None)
    items = [f"{k}={v}" for k, v in opts.items()] + [f"size={format_size(size)}"]
    return ",".join([f"{storage}:vm-{vmid}-disk-{index}", *items]), True


def _complete(conf: VmConfig) -> None:
    """What PVE fills in on create: MACs, sorted unique tags, SMBIOS uuid, vmgenid."""
    for key in [k for k in conf if is_net_key(k)]:
        net = parse_net(str(conf[key]))
        if not net.get("macaddr"):
            net["macaddr"] = gen_mac()
        conf[key] = format_net(net)
    if conf.get("tags"):
        conf["tags"] = ";".join(sorted(set(parse_tags(str(conf["tags"])))))
    conf.setdefault("smbios1", f"uuid={uuid.uuid4()}")
    conf.setdefault("vmgenid", str(uuid.uuid4()))


def _check_imports(token_id: str, params: Params) -> None:
    """Only root may import a disk from an arbitrary path."""
    for key, value in params.items():
        if DISK_KEY_RE.match(key):
            src = parse_property_string(str(value), "file").get("import-from", "")
            if src.startswith("/") and not is_root(token_id):
                raise SimError(403, "Permission check failed (Only root can pass "
                                    "arbitrary filesystem paths.)")


class Creates:
    def __init__(self, store: ClusterStore, tasks: TaskEngine) -> None:
        self.store = store
        self.tasks = tasks

    def qm_create(self, token_id: str, node: str, p: Params,
                  fault: FaultRecord | None = None) -> str:
        with self.store.lock:
            self.store.check_node(node)
            vmid = int(p["vmid"])
            if str(vmid) in self.store.vms():
                raise SimError(500, f"unable to create VM {vmid}: config file already exists")
            pool = p.get("pool")
            if pool is not None and pool not in self.store.state["pools"]:
                raise SimError(500, f"pool '{pool}' does not exist")
            params = {k: v for k, v in p.items() if k not in _NOT_CONFIG}
            _check_imports(token_id, params)
            self.store.vms()[str(vmid)] = new_vm_record(vmid, node, {"lock": "create"},
                                                        pool=None)
            action = {"op": "create", "vmid": vmid, "params": params, "pool": pool,
                      "start": bool(p.get("start"))}
            upid = self.tasks.start(token_id, node, "qmcreate", str(vmid),
                                    self.store.cfg.clone_seconds, action, fault)
            self.store.save()
            return upid

    def _config(self, task: TaskRecord, action: Action) -> VmConfig:
        conf: VmConfig = {}
        index = 0
        for key, value in sorted(action["params"].items()):
            if not DISK_KEY_RE.match(key):
                conf[key] = value
                continue
            conf[key], allocated = _new_drive(task, action["vmid"], value, index,
                                              self.store.cfg.snippets_dir)
            index += allocated
        _complete(conf)
        return conf

    def run_task(self, task: TaskRecord, action: Action) -> None:
        vmid = action["vmid"]
        vm = self.store.get_vm(vmid)
        if vm is None or vm["config"] != {"lock": "create"}:
            raise TaskError(f"unable to create VM {vmid}: config file vanished")
        conf = self._config(task, action)
        vm["config"] = conf
        vm["pool"] = action["pool"]
        if action["start"] and not conf.get("template"):
            vm["status"] = "running"
            vm["started_at"] = now()
            vm["pid"] = random.randint(1000, 999999)

    def on_failure(self, action: Action, exitstatus: str) -> str:
        """PVE removes the half-created VM's config."""
        vm = self.store.get_vm(action["vmid"])
        if vm is not None and vm["config"] == {"lock": "create"}:
            del self.store.vms()[str(action["vmid"])]
        return exitstatus
