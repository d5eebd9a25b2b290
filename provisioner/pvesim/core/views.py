"""How VMs and nodes look in PVE's answers: listings, status objects and the control view.

Pure functions of the records (and the clock): what a real PVE computes from its running
processes, the simulator derives from the config.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

from provisioner.pvesim.core.qemu_conf import (
    DISK_KEY_RE,
    config_digest,
    disk_size,
    is_cdrom,
    smbios_uuid,
)
from provisioner.pvesim.core.records import Entry, NodeInfo, VmRecord
from provisioner.pvesim.core.topology import now
from provisioner.pvesim.property_strings import FormatError, parse_property_string
from provisioner.pvesim.sim_config import GIB, MIB


def vm_mem(vm: VmRecord) -> int:
    mem = str(vm["config"].get("memory", "512"))
    try:
        return int(parse_property_string(mem, "current").get("current", "512")) * MIB
    except (FormatError, ValueError):
        return 512 * MIB


def vm_cpus(vm: VmRecord) -> int:
    c = vm["config"]
    return int(c.get("cores", 1)) * int(c.get("sockets", 1))


def vm_maxdisk(vm: VmRecord) -> int:
    """The size of the first (by key) real disk that states one; 0 when none does."""
    for key in sorted(vm["config"]):
        if DISK_KEY_RE.match(key) and not is_cdrom(str(vm["config"][key])):
            size = disk_size(str(vm["config"][key]))
            if size:
                return size
    return 0


def uptime(vm: VmRecord) -> int:
    started = vm.get("started_at")
    if vm["status"] == "running" and started:
        return max(0, int(now() - started))
    return 0


def _optional_fields(vm: VmRecord, entry: Entry) -> None:
    c = vm["config"]
    if "name" in c:
        entry["name"] = c["name"]
    if c.get("tags"):
        entry["tags"] = c["tags"]
    if c.get("lock"):
        entry["lock"] = c["lock"]
    if c.get("template"):
        entry["template"] = 1
    if vm["status"] == "running" and vm.get("pid"):
        entry["pid"] = vm["pid"]


def vm_summary(vm: VmRecord) -> Entry:
    """Common fields of /cluster/resources, /nodes/{node}/qemu and /pools members."""
    running = vm["status"] == "running"
    maxmem = vm_mem(vm)
    entry: Entry = {
        "vmid": vm["vmid"],
        "status": vm["status"],
        "maxmem": maxmem,
        "mem": int(maxmem * 0.4) if running else 0,
        "maxdisk": vm_maxdisk(vm),
        "disk": 0,
        "uptime": uptime(vm),
        "cpu": 0.01 if running else 0,
        "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0,
    }
    _optional_fields(vm, entry)
    return entry


def qemu_resource(vm: VmRecord) -> Entry:
    """A VM as a ``type: qemu`` resource (cluster resources, pool members)."""
    entry = vm_summary(vm)
    entry.pop("pid", None)
    entry.update({"id": f"qemu/{vm['vmid']}", "type": "qemu", "node": vm["node"],
                  "maxcpu": vm_cpus(vm), "template": 1 if vm["config"].get("template") else 0})
    return entry


def node_entry(name: str, info: NodeInfo, vms: Iterable[VmRecord]) -> Entry:
    """A node as ``/cluster/resources`` shows it; memory in use counts its running VMs."""
    online = info["status"] == "online"
    used = info.get("mem_base", 0) + sum(
        vm_mem(vm) for vm in vms if vm["node"] == name and vm["status"] == "running")
    return {
        "id": f"node/{name}", "type": "node", "node": name,
        "status": "online" if online else "offline",
        "maxmem": info["maxmem"], "mem": used if online else 0,
        "maxcpu": info["maxcpu"], "cpu": 0.03 if online else 0,
        "maxdisk": 100 * GIB, "disk": 10 * GIB,
        "uptime": int(now() - info.get("booted", now())) if online else 0,
        "level": "", "cgroup-mode": 2,
    }


def vm_view(vm: VmRecord) -> Entry:
    """A VM as the control API shows it: the record plus what tests want at a glance."""
    c = vm["config"]
    tags = [t for t in str(c.get("tags", "")).split(";") if t]
    config = copy.deepcopy(c)
    config["digest"] = config_digest(c)
    return {
        "vmid": vm["vmid"], "node": vm["node"], "name": c.get("name"),
        "status": vm["status"], "lock": c.get("lock"), "pool": vm["pool"], "tags": tags,
        "description": c.get("description"), "smbios_uuid": smbios_uuid(c),
        "template": bool(c.get("template")), "uptime": uptime(vm),
        "guest": dict(vm["guest"]), "boot": vm.get("boot"), "boots": vm.get("boots", 0),
        "config": config, "firewall": copy.deepcopy(vm.get("firewall")),
    }
