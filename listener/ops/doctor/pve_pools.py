"""The VMID range and the IPv4 pool against the VMs we do not own (as far as the token can
see them): an overlap means an allocation the daemon would have to skip or, for an address
in use, a VM that boots into a conflict."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import cast

from listener.config import Config
from listener.ops.doctor.check import Check, failed, guarded, passed
from provisioner.proxmox.client import PveClient
from provisioner.proxmox.encoders import split_tags

#: foreign VMs whose config is read for their addresses (a bound on the check's cost)
MAX_CONFIG_READS = 50


def _foreign(client: PveClient, config: Config) -> list[Mapping[str, object]]:
    """Visible QEMU VMs without our tag (the template included)."""
    tag = config.proxmox.tag
    return [cast("Mapping[str, object]", e) for e in client.resources("vm")
            if e.get("type") == "qemu" and tag not in split_tags(str(e.get("tags") or ""))]


def _ipv4_of(client: PveClient, entry: Mapping[str, object]) -> str | None:
    config = client.get_object(f"nodes/{entry.get('node')}/qemu/{entry.get('vmid')}/config")
    for part in str(config.get("ipconfig0") or "").split(","):
        key, _, value = part.partition("=")
        if key == "ip" and value not in ("", "dhcp"):
            return value.split("/", 1)[0]
    return None


def _vmid_clashes(foreign: list[Mapping[str, object]], config: Config) -> list[str]:
    vmids = config.network.vmid_range
    return [f"{e.get('vmid')} ({e.get('name')})" for e in foreign
            if vmids.start <= int(str(e.get("vmid"))) <= vmids.end]


def _ip_clashes(client: PveClient, foreign: list[Mapping[str, object]],
                config: Config) -> list[str]:
    first, last = config.network.ip_pool.bounds()
    clashes = []
    for entry in foreign[:MAX_CONFIG_READS]:
        address = _ipv4_of(client, entry)
        if address is not None and first <= ipaddress.IPv4Address(address) <= last:
            clashes.append(f"{address} (VM {entry.get('vmid')})")
    gateway = config.network.ip_pool.gateway
    if gateway is not None and first <= ipaddress.IPv4Address(gateway) <= last:
        clashes.append(f"{gateway} (the gateway)")
    return clashes


def pools_check(client: PveClient, config: Config) -> Check:
    name = "VMID and IP pools"

    def run() -> Check:
        foreign = _foreign(client, config)
        vmids = _vmid_clashes(foreign, config)
        ips = _ip_clashes(client, foreign, config)
        if vmids or ips:
            found = ([f"VMIDs {', '.join(vmids)} in network.vmid_range"] if vmids else []) + (
                [f"addresses {', '.join(ips)} in network.ip_pool"] if ips else [])
            return failed(name, "not ours but inside our pools: " + "; ".join(found),
                          "move network.vmid_range / network.ip_pool start..end past them")
        return passed(name, f"no VM we do not own (of {len(foreign)} visible) uses our "
                            "VMIDs or addresses")

    return guarded(name, "check network.vmid_range and network.ip_pool", run)
