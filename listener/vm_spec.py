"""The VMSpec of an inventory record: one place that turns config + leases into a VM shape.

Used by the reconciler when it builds a subscription's VM and by ``vm export-tf`` when it
writes the Terraform directory of an existing one, so both describe the same VM.
"""

from __future__ import annotations

from listener.config import Config, PlanSize
from provisioner.backend import VMSpec, subscription_tag
from provisioner.inventory import Pools, VMRecord


def vm_spec(config: Config, record: VMRecord, pools: Pools, *, size: PlanSize,
            user_data: str | None) -> VMSpec:
    """The VM a subscription's inventory record stands for (its ids, size and network)."""
    if record.subscription_id is None:
        raise ValueError(f"VM {record.name} belongs to no subscription")
    px = config.proxmox
    return VMSpec(
        name=record.name, vmid=record.vmid, node=record.node, template_vmid=px.template_vmid,
        cores=size.cores, memory_mb=size.memory, disk_gb=size.disk,
        ipv4_cidr=f"{record.ipv4}/{pools.ipv4_prefixlen}" if record.ipv4 else None,
        gateway4=pools.ipv4_gateway if record.ipv4 else None,
        ipv6_cidr=f"{record.ipv6}/128" if record.ipv6 else None,
        gateway6=pools.ipv6_gateway if record.ipv6 else None,
        bridge=config.network.bridge, pool=px.pool,
        tags=(px.tag, subscription_tag(record.subscription_id)),
        subscription_id=record.subscription_id,
        username=record.username or config.vm.username, user_data=user_data,
        storage=px.storage, full_clone=px.full_clone,
    )
