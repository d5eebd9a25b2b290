"""What a cluster holds before anyone touches it: nodes, pools and the template VM.

Also the one way a VM record is made, so every VM (template, clone, created, foreign) has the
same fields.
"""

from __future__ import annotations

import random
import time
import uuid

from provisioner.pvesim.core.qemu_conf import gen_mac
from provisioner.pvesim.core.records import SimState, VmConfig, VmRecord
from provisioner.pvesim.sim_config import GIB, SimConfig

STATE_FORMAT = 1


def now() -> float:
    return time.time()


def initial_state() -> SimState:
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


def new_vm_record(vmid: int, node: str, config: VmConfig, *, pool: str | None,
                  status: str = "stopped") -> VmRecord:
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


def ensure_topology(state: SimState, cfg: SimConfig) -> None:
    """Add the configured nodes, pools and template where missing (a loaded state keeps its)."""
    nodes = state.setdefault("nodes", {})
    for name in cfg.nodes:
        nodes.setdefault(name, {"status": "online", "maxmem": cfg.node_maxmem,
                                "mem_base": 2 * GIB, "maxcpu": cfg.node_maxcpu,
                                "booted": now()})
    pools = state.setdefault("pools", {})
    for pool in [cfg.pool, *cfg.extra_pools]:
        if pool:
            pools.setdefault(pool, {"comment": "blockhost subscription VMs"})
    vms = state.setdefault("vms", {})
    tid = str(cfg.template_vmid)
    if tid not in vms:
        vms[tid] = template_vm(cfg)


def template_vm(cfg: SimConfig) -> VmRecord:
    """The cloud-init template every subscription VM is cloned from."""
    vmid = cfg.template_vmid
    st = cfg.template_storage
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
    return new_vm_record(vmid, cfg.nodes[0], config, pool=None)
