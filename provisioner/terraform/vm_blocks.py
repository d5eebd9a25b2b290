"""The blocks of a bpg/proxmox VM resource that carry hardware: cpu, memory, the boot disk,
the network device and the cloud-init drive.

Each states every attribute the provider would otherwise fill with its default on clone (see
:mod:`.inherit`), and ``network_device`` - an *attribute* in the provider's schema
(``ConfigMode: SchemaConfigModeAttr``), not a block - carries all its 11 fields, null where
unset, because Terraform's JSON syntax type-checks an attribute's objects as a whole.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from provisioner.backend import VMSpec, deployment_tag, marker_for, subscription_tag
from provisioner.terraform.inherit import Inherited

#: network_device's fields at v0.111.1 (network/schema.go); every object carries all of them.
NETWORK_DEVICE_FIELDS = ("bridge", "disconnected", "enabled", "firewall", "mac_address",
                         "model", "mtu", "queues", "rate_limit", "trunks", "vlan_id")


def ownership_markers(spec: VMSpec, *, tag: str, deployment: str | None) -> dict[str, Any]:
    """``description`` (the marker) and ``tags`` that prove the VM ours (see
    :func:`provisioner.backend.ownership_problems`), the deployment's included when set."""
    tags = {tag, subscription_tag(spec.subscription_id), *spec.tags}
    if deployment is not None:
        tags.add(deployment_tag(tag, deployment))
    return {"description": marker_for(spec.subscription_id, spec.name, managed_by=tag,
                                       deployment=deployment),
            "tags": sorted(tags)}


def cpu_block(cores: int, kept: Inherited) -> dict[str, Any]:
    """``cpu``: our core count, everything else as the source has it."""
    cpu = kept.cpu
    block: dict[str, Any] = {"cores": cores, "type": kept.cpu_type(cores),
                             "flags": list(cpu.flags), "sockets": cpu.sockets,
                             "numa": cpu.numa}
    optional = {"hotplugged": cpu.hotplugged, "limit": cpu.limit, "units": cpu.units,
                "affinity": cpu.affinity}
    block.update({k: v for k, v in optional.items() if v is not None})
    return block


def memory_block(dedicated: int, kept: Inherited) -> dict[str, Any]:
    """``memory``: our size; the balloon and hugepages as the source has them."""
    block: dict[str, Any] = {"dedicated": dedicated, "floating": kept.floating(dedicated)}
    if kept.memory.hugepages is not None:
        block["hugepages"] = kept.memory.hugepages
    if kept.memory.keep_hugepages is not None:
        block["keep_hugepages"] = kept.memory.keep_hugepages
    return block


def disk_block(spec: VMSpec, interface: str, kept: Inherited) -> dict[str, Any]:
    """The boot disk, never moved by default: a full clone lands on ``spec.storage`` (the
    clone's target), anything else stays where the source keeps it. Never shrunk either: the
    provider fails a clone asking for less than the template's disk."""
    cloned_to = spec.storage if spec.full_clone and not kept.is_live else None
    target = cloned_to or kept.disk.datastore
    return {"interface": interface, "datastore_id": target,
            "size": max(spec.disk_gb, kept.disk.size_gb), **kept.disk.options}


def network_devices(bridge: str, kept: Inherited) -> list[dict[str, Any]]:
    """``network_device`` (an attribute: all 11 fields). The MAC is left to PVE (a clone gets
    its own; Computed keeps it); ``enabled`` is deprecated and defaults to true. The
    firewall is always on: the VM's anti-spoofing IP filter acts only on such an interface."""
    nic = kept.nic
    device: dict[str, Any] = {
        "bridge": bridge, "disconnected": nic.disconnected, "enabled": None,
        "firewall": True, "mac_address": None, "model": nic.model, "mtu": nic.mtu,
        "queues": nic.queues, "rate_limit": nic.rate_limit, "trunks": nic.trunks,
        "vlan_id": nic.vlan_id}
    return [device]


def ip_config(spec: VMSpec) -> list[dict[str, Any]]:
    """``initialization.ip_config`` from validated addresses (raises ValueError otherwise)."""
    block: dict[str, Any] = {}
    for family, cidr, gateway in ((4, spec.ipv4_cidr, spec.gateway4),
                                  (6, spec.ipv6_cidr, spec.gateway6)):
        if not cidr:
            if gateway:
                raise ValueError(f"gateway{family} given without ipv{family}_cidr")
            continue
        block[f"ipv{family}"] = _address(family, cidr, gateway)
    return [block] if block else []


def _address(family: int, cidr: str, gateway: str | None) -> dict[str, Any]:
    iface = ipaddress.ip_interface(cidr)
    if iface.version != family or "/" not in cidr:
        raise ValueError(f"not an IPv{family} CIDR: {cidr!r}")
    entry: dict[str, Any] = {"address": iface.with_prefixlen}
    if gateway:
        gw = ipaddress.ip_address(gateway)
        if gw.version != family:
            raise ValueError(f"not an IPv{family} gateway: {gateway!r}")
        entry["gateway"] = str(gw)
    return entry


def initialization(spec: VMSpec, kept: Inherited, *, fallback_datastore: str | None,
                   user_data_volume: str | None) -> dict[str, Any]:
    """The cloud-init drive, re-created by the provider on clone on ``datastore_id``: kept
    where the source has it. ``user_data_volume`` is the snippet's literal volume id."""
    store = kept.cloudinit_datastore or fallback_datastore or spec.storage
    if not store:
        raise ValueError("no datastore for the cloud-init drive: the source VM has none and "
                         "neither a cloud-init datastore nor a storage is configured")
    init: dict[str, Any] = {"datastore_id": store}
    addresses = ip_config(spec)
    if addresses:
        init["ip_config"] = addresses
    if user_data_volume is not None:
        init["user_data_file_id"] = user_data_volume
    else:
        init["user_account"] = {"username": spec.username}
    return init
