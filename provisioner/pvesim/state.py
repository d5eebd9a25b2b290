"""The simulated cluster: nodes, VMs, pools, UPID tasks, faults, and their persistence.

All state lives in one JSON document guarded by one lock; every change is written to the state
file atomically (temp file + fsync + rename). Tasks finish when their deadline passes (checked by
a ticker thread and on every request); their effects are applied at that moment, so errors that
PVE raises inside a worker surface as a failed task, never as an HTTP error.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provisioner.storage.atomic_file import write_atomic
from provisioner.pvesim import params as P

STATE_FORMAT = 1
GIB = 1024**3
MIB = 1024**2

#: fault-injection operation names (one per API endpoint the simulator serves)
OPS = (
    "version", "nodes", "cluster_resources", "nextid", "pools", "pool", "vm_list", "vm_index",
    "clone", "config_get", "config_put", "config_post", "resize", "status_current", "start",
    "shutdown", "stop", "destroy", "agent_ping", "task_status", "task_log", "create", "template",
)
#: operations that return a UPID (``fail_task`` / ``hang`` act on their task)
TASK_OPS = ("clone", "config_post", "resize", "start", "shutdown", "stop", "destroy", "create",
            "template")
FAULT_MODES = ("http_error", "http_500", "fail_task", "hang", "drop_connection", "latency",
               "slow_task")
#: modes that act on the UPID task of a task op (not on the HTTP exchange)
TASK_FAULT_MODES = ("fail_task", "slow_task")

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
#: storages every simulated node has, and what they hold
STORAGES = {"local": "backup,import,iso,snippets,vztmpl", "local-lvm": "images,rootdir"}
#: virtual size the simulator gives an imported cloud image
IMPORTED_IMAGE_SIZE = 3584 * 1024**2

_DISK_KEY_RE = re.compile(r"^(ide|sata|scsi|virtio)\d+$|^efidisk0$|^tpmstate0$")
_SIZE_RE = re.compile(r"^(\+)?(\d+(?:\.\d+)?)([KMGT]?)$")
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


class SimError(Exception):
    """An API error: HTTP status, message (goes into the reason phrase), optional errors."""

    def __init__(self, status: int, message: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors


class TaskError(Exception):
    """An error raised inside a task worker: becomes the task's exitstatus."""


@dataclass
class SimConfig:
    nodes: list[str]
    template_vmid: int = 9001
    pool: str | None = "blockhost"  # "" / None: no privilege separation
    clone_seconds: float = 2.0
    task_seconds: float = 0.05
    state_file: Path | None = None
    snippets_dir: Path | None = None
    bridges: tuple[str, ...] = ("vmbr0",)
    node_maxmem: int = 64 * GIB
    node_maxcpu: int = 32
    template_storage: str = "local-lvm"
    extra_pools: tuple[str, ...] = field(default_factory=tuple)


def now() -> float:
    return time.time()


def gen_mac() -> str:
    return "BC:24:11:" + ":".join(f"{random.randint(0, 255):02X}" for _ in range(3))


def parse_size(text: str) -> int:
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(text)
    return int(float(m.group(2)) * _UNITS[m.group(3)])


def format_size(size: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return str(size)


def split_user(token_id: str) -> str:
    """``user@realm!tokenid`` -> ``user@realm``."""
    return token_id.split("!", 1)[0]


def config_digest(config: dict[str, Any]) -> str:
    """SHA1 over the config rendered like a qemu-server .conf file (description as comments)."""
    lines = []
    desc = config.get("description")
    if desc:
        lines.extend("#" + line for line in str(desc).split("\n"))
    for key in sorted(k for k in config if k != "description"):
        lines.append(f"{key}: {config[key]}")
    return hashlib.sha1(("\n".join(lines) + "\n").encode()).hexdigest()


def smbios_uuid(config: dict[str, Any]) -> str | None:
    raw = config.get("smbios1")
    if not raw:
        return None
    for part in str(raw).split(","):
        if part.startswith("uuid="):
            return part[5:]
    return None


def _replace_smbios_uuid(raw: str | None) -> str:
    parts = [p for p in (raw or "").split(",") if p and not p.startswith("uuid=")]
    return ",".join([f"uuid={uuid.uuid4()}"] + parts)


def _volume_of(value: str) -> tuple[str, list[str]]:
    items = value.split(",")
    vol = items[0][5:] if items[0].startswith("file=") else items[0]
    return vol, items[1:]


def _disk_size(value: str) -> int | None:
    _, opts = _volume_of(value)
    for opt in opts:
        if opt.startswith("size="):
            try:
                return parse_size(opt[5:])
            except ValueError:
                return None
    return None


def _is_cdrom(value: str) -> bool:
    return "media=cdrom" in value.split(",")[1:]


class Simulator:
    """The whole simulated cluster. Thread-safe; every public method takes the lock."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.lock = threading.RLock()
        self.state: dict[str, Any] = {}
        loaded = False
        if cfg.state_file is not None and cfg.state_file.exists():
            with open(cfg.state_file, encoding="utf-8") as fh:
                self.state = json.load(fh)
            if self.state.get("format") != STATE_FORMAT:
                raise ValueError(f"{cfg.state_file}: unsupported state format")
            loaded = True
            self._recover_after_restart()
        else:
            self.state = self._initial_state()
        self._ensure_topology()
        if loaded or cfg.state_file is not None:
            self._save()

    # ------------------------------------------------------------------ persistence / setup

    def _initial_state(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "created": now(),
            "nodes": {},
            "pools": {},
            "vms": {},
            "tasks": {},
            "faults": [],
            "next_fault_id": 1,
            "pid_counter": random.randint(100000, 400000),
        }

    def _ensure_topology(self) -> None:
        nodes = self.state.setdefault("nodes", {})
        for name in self.cfg.nodes:
            nodes.setdefault(name, {"status": "online", "maxmem": self.cfg.node_maxmem,
                                    "mem_base": 2 * GIB, "maxcpu": self.cfg.node_maxcpu,
                                    "booted": now()})
        pools = self.state.setdefault("pools", {})
        for pool in [self.cfg.pool, *self.cfg.extra_pools]:
            if pool:
                pools.setdefault(pool, {"comment": "blockhost subscription VMs"})
        vms = self.state.setdefault("vms", {})
        tid = str(self.cfg.template_vmid)
        if tid not in vms:
            vms[tid] = self._template_vm()

    def _template_vm(self) -> dict[str, Any]:
        vmid = self.cfg.template_vmid
        st = self.cfg.template_storage
        config = {
            "name": "blockhost-template",
            "template": 1,
            "cores": 2,
            "sockets": 1,
            "memory": "2048",
            "scsihw": "virtio-scsi-pci",
            "scsi0": f"{st}:base-{vmid}-disk-0,size=2G",
            "ide2": f"{st}:vm-{vmid}-cloudinit,media=cdrom",
            "boot": "order=scsi0",
            "net0": f"virtio={gen_mac()},bridge=vmbr0",
            "agent": "1",
            "ostype": "l26",
            "serial0": "socket",
            "vga": "serial0",
            "ipconfig0": "ip=dhcp",
            "smbios1": f"uuid={uuid.uuid4()}",
            "vmgenid": str(uuid.uuid4()),
        }
        return self._new_vm_record(vmid, self.cfg.nodes[0], config, pool=None)

    @staticmethod
    def _new_vm_record(vmid: int, node: str, config: dict[str, Any], *, pool: str | None,
                       status: str = "stopped") -> dict[str, Any]:
        return {
            "vmid": vmid,
            "node": node,
            "config": config,
            "status": status,
            "pool": pool,
            "started_at": now() if status == "running" else None,
            "pid": random.randint(1000, 999999) if status == "running" else None,
            "guest": {"acpi": True, "agent": True},
            "boot": None,
        }

    def _recover_after_restart(self) -> None:
        """Tasks that were running when the previous process died end in error; their
        locks (e.g. ``lock: clone``) stay in place - a stuck lock only root can clear."""
        for task in self.state.get("tasks", {}).values():
            if task["status"] == "running":
                task["status"] = "stopped"
                task["exitstatus"] = "unexpected status"
                task["endtime"] = int(now())
                task["log"].append("TASK ERROR: unexpected status")

    def _save(self) -> None:
        path = self.cfg.state_file
        if path is None:
            return
        data = json.dumps(self.state, sort_keys=True, indent=1).encode()
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data, mode=0o600)

    # ------------------------------------------------------------------ helpers

    def _vms(self) -> dict[str, dict[str, Any]]:
        return self.state["vms"]

    def _get_vm(self, vmid: int) -> dict[str, Any] | None:
        return self._vms().get(str(vmid))

    def check_node(self, node: str) -> None:
        info = self.state["nodes"].get(node)
        if info is None:
            raise SimError(500, f"hostname lookup '{node}' failed - failed to get address info "
                                f"for: {node}: Name or service not known")
        if info["status"] != "online":
            raise SimError(595, "Connection refused")

    def _vm_on(self, node: str, vmid: int) -> dict[str, Any]:
        vm = self._get_vm(vmid)
        if vm is None or vm["node"] != node:
            raise SimError(500, f"Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' "
                                "does not exist")
        return vm

    def is_root(self, token_id: str) -> bool:
        return split_user(token_id) == "root@pam"

    def has_perm(self, token_id: str, path: str, priv: str) -> bool:
        """The simulated ACL: a non-root token holds PVEVMAdmin on ``/pool/<pool>`` (inherited
        by the pool's members), VM.Audit+VM.Clone on the template, Sys.Audit on ``/nodes``."""
        if not self.cfg.pool or self.is_root(token_id):
            return True
        parts = path.strip("/").split("/")
        if parts[0] == "vms" and len(parts) == 2:
            vm = self._vms().get(parts[1])
            if vm is None:
                return False
            if vm["pool"] == self.cfg.pool:
                return True
            if vm["vmid"] == self.cfg.template_vmid:
                return priv in ("VM.Audit", "VM.Clone")
            return False
        if parts[0] == "pool" and len(parts) >= 2:
            return "/".join(parts[1:]) == self.cfg.pool
        if parts[0] in ("nodes", ""):
            return priv == "Sys.Audit"
        return False

    def check_perm(self, token_id: str, path: str, priv: str) -> None:
        with self.lock:
            if not self.has_perm(token_id, path, priv):
                raise SimError(403, f"Permission check failed ({path}, {priv})")

    def _check_skiplock(self, token_id: str, params: dict[str, Any]) -> bool:
        if params.get("skiplock"):
            if not self.is_root(token_id):
                raise SimError(400, "Parameter verification failed.",
                               {"skiplock": "Only root may use this option."})
            return True
        return False

    def _visible(self, token_id: str, vm: dict[str, Any]) -> bool:
        return self.has_perm(token_id, f"/vms/{vm['vmid']}", "VM.Audit")

    def _vm_mem(self, vm: dict[str, Any]) -> int:
        mem = str(vm["config"].get("memory", "512"))
        try:
            return int(P.parse_property_string(mem, "current").get("current", "512")) * MIB
        except (P.FormatError, ValueError):
            return 512 * MIB

    def _vm_cpus(self, vm: dict[str, Any]) -> int:
        c = vm["config"]
        return int(c.get("cores", 1)) * int(c.get("sockets", 1))

    def _vm_maxdisk(self, vm: dict[str, Any]) -> int:
        for key in sorted(vm["config"]):
            if _DISK_KEY_RE.match(key) and not _is_cdrom(str(vm["config"][key])):
                size = _disk_size(str(vm["config"][key]))
                if size:
                    return size
        return 0

    def _uptime(self, vm: dict[str, Any]) -> int:
        if vm["status"] == "running" and vm.get("started_at"):
            return max(0, int(now() - vm["started_at"]))
        return 0

    def _vm_summary(self, vm: dict[str, Any]) -> dict[str, Any]:
        """Common fields of /cluster/resources, /nodes/{node}/qemu and /pools members."""
        c = vm["config"]
        running = vm["status"] == "running"
        maxmem = self._vm_mem(vm)
        entry: dict[str, Any] = {
            "vmid": vm["vmid"],
            "status": vm["status"],
            "maxmem": maxmem,
            "mem": int(maxmem * 0.4) if running else 0,
            "maxdisk": self._vm_maxdisk(vm),
            "disk": 0,
            "uptime": self._uptime(vm),
            "cpu": 0.01 if running else 0,
            "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0,
        }
        if "name" in c:
            entry["name"] = c["name"]
        if c.get("tags"):
            entry["tags"] = c["tags"]
        if c.get("lock"):
            entry["lock"] = c["lock"]
        if c.get("template"):
            entry["template"] = 1
        if running and vm.get("pid"):
            entry["pid"] = vm["pid"]
        return entry

    # ------------------------------------------------------------------ faults

    def add_fault(self, spec: dict[str, Any]) -> dict[str, Any]:
        op = spec.get("op")
        mode = spec.get("mode")
        if op != "*" and op not in OPS:
            raise SimError(400, f"unknown op {op!r}; one of: * {' '.join(OPS)}")
        if mode not in FAULT_MODES:
            raise SimError(400, f"unknown mode {mode!r}; one of: {' '.join(FAULT_MODES)}")
        if mode in TASK_FAULT_MODES and op not in TASK_OPS:
            raise SimError(400, f"mode {mode} needs a task op: {' '.join(TASK_OPS)}")
        unknown = set(spec) - {"op", "mode", "count", "skip", "message", "status", "seconds",
                               "vmid", "node", "newid"}
        if unknown:
            raise SimError(400, f"unknown fault fields: {sorted(unknown)}")
        with self.lock:
            fault = {
                "id": self.state["next_fault_id"],
                "op": op,
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
            self.state["next_fault_id"] += 1
            self.state["faults"].append(fault)
            self._save()
            return dict(fault)

    def clear_faults(self) -> None:
        with self.lock:
            self.state["faults"] = []
            self._save()

    def take_fault(self, op: str, *, vmid: int | None = None, node: str | None = None,
                   newid: int | None = None) -> dict[str, Any] | None:
        with self.lock:
            for fault in list(self.state["faults"]):
                if fault["op"] not in ("*", op):
                    continue
                if fault["vmid"] is not None and int(fault["vmid"]) != vmid:
                    continue
                if fault["newid"] is not None and int(fault["newid"]) != newid:
                    continue
                if fault["node"] is not None and fault["node"] != node:
                    continue
                if fault["mode"] in TASK_FAULT_MODES and op not in TASK_OPS:
                    continue
                if fault["skip"] > 0:
                    fault["skip"] -= 1
                    self._save()
                    continue
                fault["hits"] += 1
                if fault["count"] > 0:
                    fault["count"] -= 1
                    if fault["count"] == 0:
                        self.state["faults"].remove(fault)
                self._save()
                return dict(fault)
            return None

    # ------------------------------------------------------------------ tasks

    def _new_task(self, token_id: str, node: str, ttype: str, tid: str, duration: float,
                  action: dict[str, Any], fault: dict[str, Any] | None = None) -> str:
        self.state["pid_counter"] += random.randint(1, 17)
        pid = self.state["pid_counter"]
        nodeinfo = self.state["nodes"][node]
        pstart = int((now() - nodeinfo.get("booted", now())) * 100) + 1000
        starttime = int(now())
        if fault is not None and fault["mode"] == "slow_task":
            duration = float(fault["seconds"])
        upid = (f"UPID:{node}:{pid:08X}:{pstart:08X}:{starttime:08X}:{ttype}:{tid}:"
                f"{token_id}:")
        task = {
            "upid": upid, "node": node, "pid": pid, "pstart": pstart, "starttime": starttime,
            "type": ttype, "id": tid, "user": token_id, "status": "running",
            "end_at": now() + duration, "action": action, "log": [],
            "fault": None,
        }
        if fault is not None and fault["mode"] in ("fail_task", "hang"):
            msg = fault.get("message") or DEFAULT_TASK_FAILURES.get(action["op"], "task failed")
            task["fault"] = {"mode": fault["mode"],
                             "message": msg.format(vmid=action.get("vmid"),
                                                   newid=action.get("newid"))}
        self.state["tasks"][upid] = task
        return upid

    def tick(self) -> None:
        """Finish every task whose deadline has passed (called by a ticker and per request)."""
        with self.lock:
            t = now()
            changed = False
            for task in sorted(self.state["tasks"].values(), key=lambda x: x["end_at"]):
                if task["status"] != "running" or task["end_at"] > t:
                    continue
                if task.get("fault") and task["fault"]["mode"] == "hang":
                    continue
                self._finish_task(task)
                changed = True
            if changed:
                self._save()

    def _finish_task(self, task: dict[str, Any], forced_exit: str | None = None) -> None:
        action = task["action"]
        fault = task.get("fault")
        try:
            if forced_exit is not None and forced_exit != "OK":
                raise TaskError(forced_exit)
            if fault and fault["mode"] == "fail_task" and forced_exit is None:
                raise TaskError(fault["message"])
            handler = getattr(self, f"_task_{action['op']}")
            handler(task, action)
            exitstatus = "OK"
        except TaskError as exc:
            exitstatus = str(exc)
            if action["op"] == "create":
                self._create_cleanup(action)
            if action["op"] == "clone":
                # PVE frees the new volumes and unlinks the temporary config, then dies
                self._clone_cleanup(action)
                if not exitstatus.startswith("clone failed:"):
                    exitstatus = f"clone failed: {exitstatus}"
        task["status"] = "stopped"
        task["exitstatus"] = exitstatus
        task["endtime"] = int(now())
        task["log"].append("TASK OK" if exitstatus == "OK" else f"TASK ERROR: {exitstatus}")

    def finish_task(self, upid: str, exitstatus: str = "OK") -> dict[str, Any]:
        """Control API: end a (hung) task now, with success or the given error text."""
        with self.lock:
            task = self.state["tasks"].get(upid)
            if task is None:
                raise SimError(404, "no such task")
            if task["status"] == "running":
                if exitstatus == "OK":
                    task["fault"] = None
                    self._finish_task(task)
                else:
                    self._finish_task(task, forced_exit=exitstatus)
                self._save()
            return self._task_view(task)

    def _task_view(self, task: dict[str, Any]) -> dict[str, Any]:
        user, _, tokenid = task["user"].partition("!")
        view = {k: task[k] for k in ("upid", "node", "pid", "pstart", "starttime", "type", "id",
                                     "status")}
        view["user"] = user
        if tokenid:
            view["tokenid"] = tokenid
        if task["status"] == "stopped":
            view["exitstatus"] = task["exitstatus"]
        return view

    def task_status(self, token_id: str, node: str, upid: str) -> dict[str, Any]:
        with self.lock:
            self.check_node(node)
            task = self.state["tasks"].get(upid)
            if task is None or task["node"] != node:
                raise SimError(500, f"task '{upid}' does not exist")
            return self._task_view(task)

    def task_log(self, token_id: str, node: str, upid: str, start: int = 0,
                 limit: int = 50) -> list[dict[str, Any]]:
        with self.lock:
            self.check_node(node)
            task = self.state["tasks"].get(upid)
            if task is None or task["node"] != node:
                raise SimError(500, f"task '{upid}' does not exist")
            lines = task["log"] or ["no content"]
            if task["status"] == "running":
                lines = task["log"] or []
            out = [{"n": i + 1, "t": t} for i, t in enumerate(lines)]
            return out[start:start + limit] if limit else out[start:]

    # ------------------------------------------------------------------ read-only API

    def version(self) -> dict[str, Any]:
        return {"version": "9.0.10", "release": "9.0", "repoid": "0a1b2c3d", "console": "html5"}

    def _node_entry(self, name: str, info: dict[str, Any]) -> dict[str, Any]:
        online = info["status"] == "online"
        used = info.get("mem_base", 0) + sum(
            self._vm_mem(vm) for vm in self._vms().values()
            if vm["node"] == name and vm["status"] == "running")
        return {
            "id": f"node/{name}", "type": "node", "node": name,
            "status": "online" if online else "offline",
            "maxmem": info["maxmem"], "mem": used if online else 0,
            "maxcpu": info["maxcpu"], "cpu": 0.03 if online else 0,
            "maxdisk": 100 * GIB, "disk": 10 * GIB,
            "uptime": int(now() - info.get("booted", now())) if online else 0,
            "level": "", "cgroup-mode": 2,
        }

    def nodes(self) -> list[dict[str, Any]]:
        with self.lock:
            out = []
            for name, info in sorted(self.state["nodes"].items()):
                entry = self._node_entry(name, info)
                entry.pop("cgroup-mode", None)
                entry["ssl_fingerprint"] = "00:" * 31 + "00"
                out.append(entry)
            return out

    def cluster_resources(self, token_id: str, rtype: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            out: list[dict[str, Any]] = []
            if rtype in (None, "vm"):
                for vm in sorted(self._vms().values(), key=lambda v: v["vmid"]):
                    if not self._visible(token_id, vm):
                        continue
                    entry = self._vm_summary(vm)
                    entry.pop("pid", None)
                    entry.update({"id": f"qemu/{vm['vmid']}", "type": "qemu", "node": vm["node"],
                                  "maxcpu": self._vm_cpus(vm), "template": 1 if vm["config"].get("template") else 0})
                    if self.state["nodes"].get(vm["node"], {}).get("status") != "online":
                        entry["status"] = "unknown"
                    if vm["pool"]:
                        entry["pool"] = vm["pool"]
                    out.append(entry)
            if rtype in (None, "node"):
                for name, info in sorted(self.state["nodes"].items()):
                    out.append(self._node_entry(name, info))
            if rtype in (None, "storage"):
                for name in sorted(self.state["nodes"]):
                    for sid, content, ptype in (("local", STORAGES["local"], "dir"),
                                                ("local-lvm", STORAGES["local-lvm"], "lvmthin")):
                        out.append({"id": f"storage/{name}/{sid}", "type": "storage",
                                    "node": name, "storage": sid, "content": content,
                                    "plugintype": ptype, "status": "available", "shared": 0,
                                    "maxdisk": 500 * GIB, "disk": 50 * GIB})
            return out

    def nextid(self, vmid: int | None = None) -> str:
        with self.lock:
            if vmid is not None:
                if str(vmid) in self._vms():
                    raise SimError(400, "Parameter verification failed.",
                                   {"vmid": f"VM {vmid} already exists"})
                return str(vmid)
            candidate = 100
            while str(candidate) in self._vms():
                candidate += 1
            return str(candidate)

    def _pool_members(self, token_id: str, poolid: str) -> list[dict[str, Any]]:
        members = []
        for vm in sorted(self._vms().values(), key=lambda v: v["vmid"]):
            if vm["pool"] != poolid:
                continue
            entry = self._vm_summary(vm)
            entry.pop("pid", None)
            entry.update({"id": f"qemu/{vm['vmid']}", "type": "qemu", "node": vm["node"],
                          "maxcpu": self._vm_cpus(vm),
                          "template": 1 if vm["config"].get("template") else 0})
            members.append(entry)
        return members

    def pools(self, token_id: str, poolid: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            out = []
            for pid_, info in sorted(self.state["pools"].items()):
                if poolid is not None and pid_ != poolid:
                    continue
                if not self.has_perm(token_id, f"/pool/{pid_}", "Pool.Audit"):
                    continue
                entry: dict[str, Any] = {"poolid": pid_, "comment": info.get("comment", "")}
                if poolid is not None:
                    entry["members"] = self._pool_members(token_id, pid_)
                out.append(entry)
            return out

    def pool(self, token_id: str, poolid: str) -> dict[str, Any]:
        with self.lock:
            info = self.state["pools"].get(poolid)
            if info is None:
                raise SimError(500, f"pool '{poolid}' does not exist")
            return {"comment": info.get("comment", ""),
                    "members": self._pool_members(token_id, poolid)}

    def vm_list(self, token_id: str, node: str) -> list[dict[str, Any]]:
        with self.lock:
            self.check_node(node)
            out = []
            for vm in sorted(self._vms().values(), key=lambda v: v["vmid"]):
                if vm["node"] != node or not self._visible(token_id, vm):
                    continue
                entry = self._vm_summary(vm)
                entry["cpus"] = self._vm_cpus(vm)
                out.append(entry)
            return out

    def vm_index(self, token_id: str, node: str, vmid: int) -> list[dict[str, str]]:
        with self.lock:
            self.check_node(node)
            self._vm_on(node, vmid)
            return [{"subdir": s} for s in ("config", "pending", "status", "unlink", "vncproxy",
                                            "termproxy", "migrate", "resize", "move", "rrd",
                                            "rrddata", "monitor", "agent", "snapshot", "spiceproxy",
                                            "sendkey", "firewall", "mtunnel", "remote_migrate")]

    def config_get(self, token_id: str, node: str, vmid: int) -> dict[str, Any]:
        with self.lock:
            self.check_node(node)
            vm = self._vm_on(node, vmid)
            out = copy.deepcopy(vm["config"])
            out["digest"] = config_digest(vm["config"])
            return out

    def status_current(self, token_id: str, node: str, vmid: int) -> dict[str, Any]:
        with self.lock:
            self.check_node(node)
            vm = self._vm_on(node, vmid)
            c = vm["config"]
            running = vm["status"] == "running"
            out = self._vm_summary(vm)
            out.update({
                "qmpstatus": vm["status"],
                "cpus": self._vm_cpus(vm),
                "ha": {"managed": 0},
            })
            if self._agent_enabled(c):
                out["agent"] = 1
            if not running:
                out.pop("pid", None)
            return out

    @staticmethod
    def _agent_enabled(config: dict[str, Any]) -> bool:
        raw = str(config.get("agent", "0"))
        try:
            return P.parse_property_string(raw, "enabled").get("enabled", "0") == "1"
        except P.FormatError:
            return False

    def agent_ping(self, token_id: str, node: str, vmid: int) -> dict[str, Any]:
        with self.lock:
            self.check_node(node)
            vm = self._vm_on(node, vmid)
            if not self._agent_enabled(vm["config"]):
                raise SimError(500, "No QEMU guest agent configured")
            if vm["status"] != "running" or not vm["guest"].get("agent", True):
                raise SimError(500, "QEMU guest agent is not running")
            return {"result": {}}

    # ------------------------------------------------------------------ clone

    def clone(self, token_id: str, node: str, vmid: int, p: dict[str, Any],
              fault: dict[str, Any] | None = None) -> str:
        with self.lock:
            self.check_node(node)
            newid = int(p["newid"])
            src = self._vm_on(node, vmid)
            target = p.get("target")
            if target is not None and target not in self.state["nodes"]:
                raise SimError(500, f"no such cluster node '{target}'")
            pool = p.get("pool")
            if pool is not None and pool not in self.state["pools"]:
                raise SimError(500, f"pool '{pool}' does not exist")
            is_template = bool(src["config"].get("template"))
            full = bool(p["full"]) if "full" in p else not is_template
            if not full and not is_template:
                raise SimError(500, "parameter 'full' must be set for a non-template VM - "
                                    "linked clones need a template")
            if not full and ("storage" in p or "format" in p):
                raise SimError(400, "Parameter verification failed.",
                               {"storage": "option is only allowed for full clones"})
            if target is not None and target != node and not full:
                raise SimError(500, "Linked clone feature for target node is not supported on "
                                    "non-shared storage")
            if src["config"].get("lock"):
                raise SimError(500, f"VM is locked ({src['config']['lock']})")
            if str(newid) in self._vms():
                raise SimError(500, f"unable to create VM {newid}: config file already exists")
            newconf = self._clone_config(src, newid, p, full)
            # the worker writes a temporary config holding only the lock, on the source node
            self._vms()[str(newid)] = self._new_vm_record(newid, node, {"lock": "clone"},
                                                          pool=None)
            action = {"op": "clone", "vmid": vmid, "newid": newid, "config": newconf,
                      "target": target or node, "pool": pool}
            upid = self._new_task(token_id, node, "qmclone", str(vmid), self.cfg.clone_seconds,
                                  action, fault)
            task = self.state["tasks"][upid]
            for key in sorted(newconf):
                if _DISK_KEY_RE.match(key) and key in src["config"]:
                    kind = "full" if full else "linked"
                    task["log"].append(f"create {kind} clone of drive {key} "
                                       f"({_volume_of(str(src['config'][key]))[0]})")
            self._save()
            return upid

    def _clone_config(self, src: dict[str, Any], newid: int, p: dict[str, Any],
                      full: bool) -> dict[str, Any]:
        old = src["config"]
        conf: dict[str, Any] = {}
        disk_index = 0
        for key, value in old.items():
            if key in ("lock", "template", "digest") or key.startswith("unused"):
                continue
            if key.startswith("net") and key[3:].isdigit():
                try:
                    net = P.parse_net(str(value))
                    net["macaddr"] = gen_mac()
                    conf[key] = P.format_net(net)
                except P.FormatError:
                    conf[key] = value
                continue
            if _DISK_KEY_RE.match(key):
                vol, opts = _volume_of(str(value))
                storage = vol.split(":", 1)[0]
                if "cloudinit" in vol:
                    conf[key] = ",".join([f"{storage}:vm-{newid}-cloudinit", *opts])
                elif _is_cdrom(str(value)):
                    conf[key] = value
                else:
                    if full:
                        st = p.get("storage") or storage
                        newvol = f"{st}:vm-{newid}-disk-{disk_index}"
                    else:
                        newvol = f"{vol}/vm-{newid}-disk-{disk_index}"
                    disk_index += 1
                    conf[key] = ",".join([newvol, *opts])
                continue
            conf[key] = value
        conf["smbios1"] = _replace_smbios_uuid(old.get("smbios1"))
        if old.get("vmgenid"):
            conf["vmgenid"] = str(uuid.uuid4())
        conf["name"] = p.get("name") or f"Copy-of-VM-{old.get('name', src['vmid'])}"
        if p.get("description"):
            conf["description"] = p["description"]
        return conf

    def _clone_cleanup(self, action: dict[str, Any]) -> None:
        vm = self._get_vm(action["newid"])
        if vm is not None and vm["config"].get("lock") == "clone" and len(vm["config"]) == 1:
            del self._vms()[str(action["newid"])]

    def _task_clone(self, task: dict[str, Any], action: dict[str, Any]) -> None:
        vm = self._get_vm(action["newid"])
        if vm is None:
            raise TaskError(f"unable to create VM {action['newid']}: config file vanished")
        vm["config"] = copy.deepcopy(action["config"])
        vm["node"] = action["target"]
        if action["pool"]:
            vm["pool"] = action["pool"]
        task["log"].append("transferred 2.0 GiB of 2.0 GiB (100.00%)")

    # ------------------------------------------------------------------ create / template

    def qm_create(self, token_id: str, node: str, p: dict[str, Any],
                  fault: dict[str, Any] | None = None) -> str:
        """``POST /nodes/{node}/qemu``: the early checks are synchronous, disk allocation and
        image import run in the ``qmcreate`` worker while the config holds ``lock: create``."""
        with self.lock:
            self.check_node(node)
            vmid = int(p["vmid"])
            if str(vmid) in self._vms():
                raise SimError(500, f"unable to create VM {vmid}: config file already exists")
            pool = p.get("pool")
            if pool is not None and pool not in self.state["pools"]:
                raise SimError(500, f"pool '{pool}' does not exist")
            params = {k: v for k, v in p.items()
                      if k not in ("node", "vmid", "pool", "start", "storage")}
            for key, value in params.items():
                if _DISK_KEY_RE.match(key):
                    src = P.parse_property_string(str(value), "file").get("import-from", "")
                    if src.startswith("/") and not self.is_root(token_id):
                        raise SimError(403, "Permission check failed (Only root can pass "
                                            "arbitrary filesystem paths.)")
            self._vms()[str(vmid)] = self._new_vm_record(vmid, node, {"lock": "create"},
                                                         pool=None)
            action = {"op": "create", "vmid": vmid, "params": params, "pool": pool,
                      "start": bool(p.get("start"))}
            upid = self._new_task(token_id, node, "qmcreate", str(vmid), self.cfg.clone_seconds,
                                  action, fault)
            self._save()
            return upid

    def _import_size(self, src: str) -> int:
        if src.startswith("/"):
            path = Path(src)
        else:
            storage, _, rel = src.partition(":")
            if storage not in STORAGES or "import" not in STORAGES[storage].split(","):
                raise TaskError(f"storage '{storage}' does not support content-type 'import'")
            if not rel.startswith("import/") or ".." in rel.split("/"):
                raise TaskError(f"unable to parse volume filename '{rel}'")
            if self.cfg.snippets_dir is None:
                return IMPORTED_IMAGE_SIZE
            path = self.cfg.snippets_dir / rel
        if not path.is_file():
            raise TaskError(f"volume '{src}' does not exist")
        return IMPORTED_IMAGE_SIZE

    def _task_create(self, task: dict[str, Any], action: dict[str, Any]) -> None:
        vmid = action["vmid"]
        vm = self._get_vm(vmid)
        if vm is None or vm["config"] != {"lock": "create"}:
            raise TaskError(f"unable to create VM {vmid}: config file vanished")
        conf: dict[str, Any] = {}
        index = 0
        for key, value in sorted(action["params"].items()):
            if not _DISK_KEY_RE.match(key):
                conf[key] = value
                continue
            opts = P.parse_property_string(str(value), "file")
            volume = opts.pop("file")
            storage, _, rest = volume.partition(":")
            if storage not in STORAGES:
                raise TaskError(f"storage '{storage}' does not exist")
            if rest == "cloudinit":
                conf[key] = f"{storage}:vm-{vmid}-cloudinit,media=cdrom"
                continue
            if opts.get("media") == "cdrom":
                conf[key] = value
                continue
            src = opts.pop("import-from", None)
            if src:
                size = self._import_size(src)
                task["log"].append(f"importing disk '{src}' to VM {vmid} ...")
            elif re.fullmatch(r"\d+(\.\d+)?", rest):
                size = int(float(rest) * GIB)
            else:
                conf[key] = value
                continue
            if size <= 0:
                size = GIB  # PVE: a size of 0 without import-from allocates nothing useful
            opts.pop("size", None)
            items = [f"{k}={v}" for k, v in opts.items()] + [f"size={format_size(size)}"]
            conf[key] = ",".join([f"{storage}:vm-{vmid}-disk-{index}", *items])
            index += 1
        for key in [k for k in conf if k.startswith("net") and k[3:].isdigit()]:
            net = P.parse_net(str(conf[key]))
            if not net.get("macaddr"):
                net["macaddr"] = gen_mac()
            conf[key] = P.format_net(net)
        if conf.get("tags"):
            conf["tags"] = ";".join(sorted(set(P.parse_tags(str(conf["tags"])))))
        conf.setdefault("smbios1", f"uuid={uuid.uuid4()}")
        conf.setdefault("vmgenid", str(uuid.uuid4()))
        vm["config"] = conf
        vm["pool"] = action["pool"]
        if action["start"] and not conf.get("template"):
            vm["status"] = "running"
            vm["started_at"] = now()
            vm["pid"] = random.randint(1000, 999999)

    def _create_cleanup(self, action: dict[str, Any]) -> None:
        vm = self._get_vm(action["vmid"])
        if vm is not None and vm["config"] == {"lock": "create"}:
            del self._vms()[str(action["vmid"])]

    def qm_template(self, token_id: str, node: str, vmid: int, p: dict[str, Any],
                    fault: dict[str, Any] | None = None) -> str:
        """``POST .../template``: checks and ``template: 1`` are synchronous; renaming the
        disks to base volumes runs in the ``qmtemplate`` worker."""
        with self.lock:
            self.check_node(node)
            vm = self._vm_on(node, vmid)
            self._check_lock(vm, False)
            if vm["config"].get("template") and not p.get("disk"):
                raise SimError(500, "you can't convert a template to a template")
            if vm["status"] == "running":
                raise SimError(500, "you can't convert a VM to template if VM is running")
            vm["config"]["template"] = 1
            action = {"op": "template", "vmid": vmid, "disk": p.get("disk")}
            upid = self._new_task(token_id, node, "qmtemplate", str(vmid), self.cfg.task_seconds,
                                  action, fault)
            self._save()
            return upid

    def _task_template(self, task: dict[str, Any], action: dict[str, Any]) -> None:
        vm = self._get_vm(action["vmid"])
        if vm is None:
            raise TaskError(f"Configuration file 'nodes/{task['node']}/qemu-server/"
                            f"{action['vmid']}.conf' does not exist")
        for key, value in sorted(vm["config"].items()):
            if not _DISK_KEY_RE.match(key) or _is_cdrom(str(value)):
                continue
            if action["disk"] and key != action["disk"]:
                continue
            vol, opts = _volume_of(str(value))
            base = vol.replace(f"vm-{action['vmid']}-disk-", f"base-{action['vmid']}-disk-")
            vm["config"][key] = ",".join([base, *opts])
            task["log"].append(f"renamed volume '{vol}' to '{base}'")

    # ------------------------------------------------------------------ config

    def _check_lock(self, vm: dict[str, Any], skiplock: bool) -> None:
        lock = vm["config"].get("lock")
        if lock and not skiplock:
            raise SimError(500, f"VM is locked ({lock})")

    def config_update(self, token_id: str, node: str, vmid: int, p: dict[str, Any], *,
                      background: bool, fault: dict[str, Any] | None = None) -> str | None:
        with self.lock:
            self.check_node(node)
            vm = self._vm_on(node, vmid)
            skiplock = self._check_skiplock(token_id, p)
            updates = {k: v for k, v in p.items()
                       if k not in ("node", "vmid", "delete", "digest", "force", "skiplock",
                                    "background_delay")}
            deletes = P.split_list(p.get("delete", ""))
            errors = {}
            for key in deletes:
                if not P.is_known_key(P.CONFIG_KEYS, key):
                    errors["delete"] = f"invalid format - unknown config key '{key}'"
                elif key in updates:
                    errors[key] = f"you can't use '-{key}' and '-delete {key}' at the same time"
            if not updates and not deletes:
                raise SimError(500, "no options specified")
            if errors:
                raise SimError(400, "Parameter verification failed.", errors)
            if not background:
                self._apply_config(vm, updates, deletes, p.get("digest"), skiplock)
                self._save()
                return None
            action = {"op": "config_post", "vmid": vmid, "updates": updates,
                      "deletes": deletes, "digest": p.get("digest"), "skiplock": skiplock}
            upid = self._new_task(token_id, node, "qmconfig", str(vmid), self.cfg.task_seconds,
                                  action, fault)
            self._save()
            return upid

    def _task_config_post(self, task: dict[str, Any], action: dict[str, Any]) -> None:
        vm = self._get_vm(action["vmid"])
        if vm is None or vm["node"] != task["node"]:
            raise TaskError(f"Configuration file 'nodes/{task['node']}/qemu-server/"
                            f"{action['vmid']}.conf' does not exist")
        try:
            self._apply_config(vm, action["updates"], action["deletes"], action["digest"],
                               action["skiplock"])
        except SimError as exc:
            raise TaskError(exc.message) from None

    def _apply_config(self, vm: dict[str, Any], updates: dict[str, Any], deletes: list[str],
                      digest: str | None, skiplock: bool) -> None:
        self._check_lock(vm, skiplock)
        if digest and digest != config_digest(vm["config"]):
            raise SimError(500, "detected modified configuration - file changed by other user? "
                                "Try again.")
        conf = vm["config"]
        for key in deletes:
            conf.pop(key, None)
        for key, value in updates.items():
            if key == "tags":
                tags = sorted(set(P.parse_tags(value)))
                if tags:
                    conf["tags"] = ";".join(tags)
                else:
                    conf.pop("tags", None)
                continue
            if key.startswith("net") and key[3:].isdigit():
                net = P.parse_net(value)
                if not net.get("macaddr"):
                    net["macaddr"] = gen_mac()
                conf[key] = P.format_net(net)
                continue
            if key == "description" and value == "":
                conf.pop("description", None)
                continue
            conf[key] = value

    # ------------------------------------------------------------------ resize

    def resize(self, token_id: str, node: str, vmid: int, p: dict[str, Any],
               fault: dict[str, Any] | None = None) -> str:
        with self.lock:
            self.check_node(node)
            self._vm_on(node, vmid)
            skiplock = self._check_skiplock(token_id, p)
            action = {"op": "resize", "vmid": vmid, "disk": p["disk"], "size": p["size"],
                      "digest": p.get("digest"), "skiplock": skiplock}
            upid = self._new_task(token_id, node, "resize", str(vmid), self.cfg.task_seconds,
                                  action, fault)
            self._save()
            return upid

    def _task_resize(self, task: dict[str, Any], action: dict[str, Any]) -> None:
        vmid = action["vmid"]
        vm = self._get_vm(vmid)
        if vm is None or vm["node"] != task["node"]:
            raise TaskError(f"Configuration file 'nodes/{task['node']}/qemu-server/{vmid}.conf' "
                            "does not exist")
        lock = vm["config"].get("lock")
        if lock and not action["skiplock"]:
            raise TaskError(f"VM is locked ({lock})")
        if action["digest"] and action["digest"] != config_digest(vm["config"]):
            raise TaskError("detected modified configuration - file changed by other user? "
                            "Try again.")
        disk = action["disk"]
        value = vm["config"].get(disk)
        if value is None:
            raise TaskError(f"disk '{disk}' does not exist")
        if _is_cdrom(str(value)):
            raise TaskError("you can't resize a cdrom")
        size = _disk_size(str(value))
        if size is None:
            raise TaskError("unable to parse current disk size")
        text = action["size"]
        delta = parse_size(text.lstrip("+"))
        newsize = size + delta if text.startswith("+") else delta
        if newsize < size:
            raise TaskError("shrinking disks is not supported")
        if newsize == size:
            return
        vol, opts = _volume_of(str(value))
        opts = [o for o in opts if not o.startswith("size=")] + [f"size={format_size(newsize)}"]
        vm["config"][disk] = ",".join([vol, *opts])
        task["log"].append(f"Image resized to {format_size(newsize)}.")

    # ------------------------------------------------------------------ power

    def power(self, token_id: str, node: str, vmid: int, action_name: str, p: dict[str, Any],
              fault: dict[str, Any] | None = None) -> str:
        with self.lock:
            self.check_node(node)
            vm = self._vm_on(node, vmid)
            skiplock = self._check_skiplock(token_id, p)
            duration = self.cfg.task_seconds
            if action_name == "shutdown" and vm["status"] == "running" \
                    and not vm["guest"].get("acpi", True):
                duration = float(p.get("timeout", 60))
            ttype = {"start": "qmstart", "shutdown": "qmshutdown", "stop": "qmstop"}[action_name]
            action = {"op": action_name, "vmid": vmid, "skiplock": skiplock,
                      "force_stop": bool(p.get("forceStop")),
                      "timeout": p.get("timeout")}
            upid = self._new_task(token_id, node, ttype, str(vmid), duration, action, fault)
            self._save()
            return upid

    def _task_vm(self, task: dict[str, Any], action: dict[str, Any]) -> dict[str, Any]:
        vmid = action["vmid"]
        vm = self._get_vm(vmid)
        if vm is None or vm["node"] != task["node"]:
            raise TaskError(f"Configuration file 'nodes/{task['node']}/qemu-server/{vmid}.conf' "
                            "does not exist")
        lock = vm["config"].get("lock")
        if lock and not action.get("skiplock"):
            raise TaskError(f"VM is locked ({lock})")
        return vm

    def _task_start(self, task: dict[str, Any], action: dict[str, Any]) -> None:
        vm = self._task_vm(task, action)
        vmid = action["vmid"]
        if vm["config"].get("template"):
            raise TaskError("you can't start a vm if it's a template")
        if vm["status"] == "running":
            raise TaskError(f"VM {vmid} already running")
        for key, value in vm["config"].items():
            if key.startswith("net") and key[3:].isdigit():
                try:
                    bridge = P.parse_net(str(value)).get("bridge")
                except P.FormatError:
                    continue
                if bridge and bridge not in self.cfg.bridges:
                    raise TaskError(f"bridge '{bridge}' does not exist")
        boot: dict[str, Any] = {"at": now(), "user_data": None}
        cicustom = vm["config"].get("cicustom")
        if cicustom:
            try:
                parts = P.parse_cicustom(str(cicustom))
            except P.FormatError as exc:
                raise TaskError(str(exc)) from None
            for kind, volid in sorted(parts.items()):
                storage, _, rel = volid.partition(":")
                if storage not in ("local",):
                    raise TaskError(f"storage '{storage}' does not exist")
                if self.cfg.snippets_dir is not None:
                    path = self.cfg.snippets_dir / rel
                    if not rel.startswith("snippets/") or ".." in rel.split("/") \
                            or not path.is_file():
                        raise TaskError(f"volume '{volid}' does not exist")
                    if kind == "user":
                        boot["user_data"] = path.read_text(encoding="utf-8", errors="replace")[:65536]
        vm["status"] = "running"
        vm["started_at"] = now()
        vm["pid"] = random.randint(1000, 999999)
        vm["boot"] = boot
        vm["boots"] = int(vm.get("boots", 0)) + 1

    def _task_shutdown(self, task: dict[str, Any], action: dict[str, Any]) -> None:
        vm = self._task_vm(task, action)
        if vm["status"] != "running":
            return
        if not vm["guest"].get("acpi", True):
            if not action["force_stop"]:
                raise TaskError("VM quit/powerdown failed - got timeout")
            task["log"].append("VM quit/powerdown failed - terminating now with SIGTERM")
        vm["status"] = "stopped"
        vm["started_at"] = None
        vm["pid"] = None

    def _task_stop(self, task: dict[str, Any], action: dict[str, Any]) -> None:
        vm = self._task_vm(task, action)
        if vm["status"] != "running":
            return
        vm["status"] = "stopped"
        vm["started_at"] = None
        vm["pid"] = None

    # ------------------------------------------------------------------ destroy

    def destroy(self, token_id: str, node: str, vmid: int, p: dict[str, Any],
                fault: dict[str, Any] | None = None) -> str:
        with self.lock:
            self.check_node(node)
            vm = self._vm_on(node, vmid)
            skiplock = self._check_skiplock(token_id, p)
            if vm["config"].get("protection"):
                raise SimError(500, f"can't remove VM {vmid} - protection mode enabled")
            if vm["status"] == "running":
                raise SimError(500, f"VM {vmid} is running - destroy failed")
            action = {"op": "destroy", "vmid": vmid, "skiplock": skiplock,
                      "purge": bool(p.get("purge"))}
            upid = self._new_task(token_id, node, "qmdestroy", str(vmid), self.cfg.task_seconds,
                                  action, fault)
            self._save()
            return upid

    def _task_destroy(self, task: dict[str, Any], action: dict[str, Any]) -> None:
        vm = self._task_vm(task, action)
        if vm["status"] == "running":
            raise TaskError(f"VM {action['vmid']} is running - destroy failed")
        for key, value in sorted(vm["config"].items()):
            if _DISK_KEY_RE.match(key) and not _is_cdrom(str(value)):
                task["log"].append("Removing image: 100% complete...done.")
        task["log"].append(f"purging VM {action['vmid']} from related configurations..")
        del self._vms()[str(action["vmid"])]

    # ------------------------------------------------------------------ control API

    def vm_view(self, vm: dict[str, Any]) -> dict[str, Any]:
        c = vm["config"]
        tags = [t for t in str(c.get("tags", "")).split(";") if t]
        config = copy.deepcopy(c)
        config["digest"] = config_digest(c)
        return {
            "vmid": vm["vmid"], "node": vm["node"], "name": c.get("name"),
            "status": vm["status"], "lock": c.get("lock"), "pool": vm["pool"], "tags": tags,
            "description": c.get("description"), "smbios_uuid": smbios_uuid(c),
            "template": bool(c.get("template")), "uptime": self._uptime(vm),
            "guest": dict(vm["guest"]), "boot": vm.get("boot"), "boots": vm.get("boots", 0),
            "config": config,
        }

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            tasks = []
            for task in sorted(self.state["tasks"].values(), key=lambda t: (t["starttime"], t["pid"])):
                view = self._task_view(task)
                view["log"] = list(task["log"])
                view["fault"] = task.get("fault")
                tasks.append(view)
            return {
                "nodes": {n: self._node_entry(n, i) for n, i in sorted(self.state["nodes"].items())},
                "pool": self.cfg.pool or None,
                "pools": sorted(self.state["pools"]),
                "template_vmid": self.cfg.template_vmid,
                "vms": [self.vm_view(vm) for vm in sorted(self._vms().values(), key=lambda v: v["vmid"])],
                "tasks": tasks,
                "faults": [dict(f) for f in self.state["faults"]],
                "state_file": str(self.cfg.state_file) if self.cfg.state_file else None,
            }

    def create_vm(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Control API: create a VM directly (e.g. a foreign VM with no ownership markers)."""
        allowed = {"vmid", "node", "name", "pool", "tags", "description", "status", "lock",
                   "config", "template"}
        unknown = set(spec) - allowed
        if unknown:
            raise SimError(400, f"unknown fields: {sorted(unknown)}")
        with self.lock:
            try:
                vmid = int(spec["vmid"])
            except (KeyError, TypeError, ValueError):
                raise SimError(400, "vmid (integer) is required") from None
            if str(vmid) in self._vms():
                raise SimError(409, f"VM {vmid} already exists")
            node = spec.get("node") or self.cfg.nodes[0]
            if node not in self.state["nodes"]:
                raise SimError(400, f"no such node {node!r}")
            pool = spec.get("pool")
            if pool and pool not in self.state["pools"]:
                self.state["pools"][pool] = {"comment": ""}
            config: dict[str, Any] = {
                "name": spec.get("name") or f"foreign-{vmid}",
                "cores": 1, "memory": "1024", "scsihw": "virtio-scsi-pci",
                "scsi0": f"local-lvm:vm-{vmid}-disk-0,size=8G",
                "net0": f"virtio={gen_mac()},bridge=vmbr0",
                "smbios1": f"uuid={uuid.uuid4()}",
            }
            tags = spec.get("tags")
            if tags:
                if isinstance(tags, str):
                    tags = P.split_list(tags)
                config["tags"] = ";".join(sorted(set(tags)))
            if spec.get("description"):
                config["description"] = spec["description"]
            if spec.get("lock"):
                config["lock"] = spec["lock"]
            if spec.get("template"):
                config["template"] = 1
            config.update(spec.get("config") or {})
            status = spec.get("status", "stopped")
            if status not in ("running", "stopped"):
                raise SimError(400, "status must be running or stopped")
            vm = self._new_vm_record(vmid, node, config, pool=pool, status=status)
            self._vms()[str(vmid)] = vm
            self._save()
            return self.vm_view(vm)

    def update_vm(self, vmid: int, spec: dict[str, Any]) -> dict[str, Any]:
        """Control API: change a VM behind the API's back (out-of-band edits, guest behaviour)."""
        allowed = {"status", "lock", "pool", "node", "config", "guest_acpi", "guest_agent"}
        unknown = set(spec) - allowed
        if unknown:
            raise SimError(400, f"unknown fields: {sorted(unknown)}")
        with self.lock:
            vm = self._get_vm(vmid)
            if vm is None:
                raise SimError(404, f"VM {vmid} does not exist")
            if "status" in spec:
                if spec["status"] not in ("running", "stopped"):
                    raise SimError(400, "status must be running or stopped")
                vm["status"] = spec["status"]
                vm["started_at"] = now() if spec["status"] == "running" else None
                vm["pid"] = random.randint(1000, 999999) if spec["status"] == "running" else None
            if "lock" in spec:
                if spec["lock"]:
                    vm["config"]["lock"] = spec["lock"]
                else:
                    vm["config"].pop("lock", None)
            if "pool" in spec:
                vm["pool"] = spec["pool"] or None
                if vm["pool"] and vm["pool"] not in self.state["pools"]:
                    self.state["pools"][vm["pool"]] = {"comment": ""}
            if "node" in spec:
                if spec["node"] not in self.state["nodes"]:
                    raise SimError(400, f"no such node {spec['node']!r}")
                vm["node"] = spec["node"]
            for key, value in (spec.get("config") or {}).items():
                if value is None:
                    vm["config"].pop(key, None)
                else:
                    vm["config"][key] = value
            if "guest_acpi" in spec:
                vm["guest"]["acpi"] = bool(spec["guest_acpi"])
            if "guest_agent" in spec:
                vm["guest"]["agent"] = bool(spec["guest_agent"])
            self._save()
            return self.vm_view(vm)

    def delete_vm(self, vmid: int) -> None:
        with self.lock:
            if self._vms().pop(str(vmid), None) is None:
                raise SimError(404, f"VM {vmid} does not exist")
            self._save()

    def set_node(self, node: str, spec: dict[str, Any]) -> dict[str, Any]:
        allowed = {"status", "maxmem", "mem_base", "maxcpu"}
        unknown = set(spec) - allowed
        if unknown:
            raise SimError(400, f"unknown fields: {sorted(unknown)}")
        with self.lock:
            info = self.state["nodes"].get(node)
            if info is None:
                raise SimError(404, f"no such node {node!r}")
            if "status" in spec:
                if spec["status"] not in ("online", "offline"):
                    raise SimError(400, "status must be online or offline")
                info["status"] = spec["status"]
            for key in ("maxmem", "mem_base", "maxcpu"):
                if key in spec:
                    info[key] = int(spec[key])
            self._save()
            return self._node_entry(node, info)

    def reset(self) -> None:
        with self.lock:
            self.state = self._initial_state()
            self._ensure_topology()
            self._save()
