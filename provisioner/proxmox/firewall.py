"""Tenant isolation with PVE's own firewall: each VM may send only from its own addresses.

Tenants have root in their VMs, so nothing inside the guest can be trusted to keep its address.
PVE's ``ipfilter`` drops every packet a VM sends from an address outside its
``ipfilter-net0`` IP set (plus the link-local address derived from its MAC), and ``macfilter``
does the same for MAC addresses. That needs three things, all set here and all idempotent, so a
create that crashed half-way converges when it runs again:

1. ``firewall=1`` on ``net0`` (part of the configure PUT, see :func:`with_firewall`);
2. the ``ipfilter-net0`` set holding exactly the VM's assigned IPv4/IPv6 addresses (a clone
   inherits its template's firewall file, so foreign entries are removed, not just ours added);
3. the VM's firewall options ``enable=1, ipfilter=1`` with ACCEPT policies both ways, so
   nothing but spoofing is filtered (PVE's default ``policy_in`` is DROP).

The datacenter firewall must be enabled for any VM rule to take effect (docs/security.md).
"""

from __future__ import annotations

import contextlib
import ipaddress
from typing import cast
from urllib.parse import quote

import structlog

from provisioner.backend import VMSpec
from provisioner.errors import AlreadyExists
from provisioner.proxmox.client import Param, PveClient

log = structlog.get_logger(__name__)

IPSET = "ipfilter-net0"
OPTIONS: dict[str, Param] = {"enable": 1, "ipfilter": 1, "macfilter": 1,
                             "policy_in": "ACCEPT", "policy_out": "ACCEPT"}


def tenant_addresses(spec: VMSpec) -> list[str]:
    """The VM's assigned addresses as IP-set entries (host addresses, no prefix)."""
    return [str(ipaddress.ip_interface(cidr).ip)
            for cidr in (spec.ipv4_cidr, spec.ipv6_cidr) if cidr]


def with_firewall(net0: str) -> str:
    """``net0`` with ``firewall=1`` (any other firewall setting replaced)."""
    parts = [p for p in net0.split(",") if p and not p.startswith("firewall=")]
    return ",".join([*parts, "firewall=1"])


class TenantFirewall:
    """Applies and removes one VM's anti-spoofing firewall through the PVE API."""

    def __init__(self, client: PveClient) -> None:
        self.client = client

    @staticmethod
    def _base(node: str, vmid: int) -> str:
        return f"nodes/{node}/qemu/{vmid}/firewall"

    def apply(self, node: str, vmid: int, addresses: list[str]) -> None:
        """Make the IP set exactly ``addresses``, then switch the filter on."""
        base = self._base(node, vmid)
        if IPSET not in self._ipset_names(base):
            self._create_ipset(base)
        wanted = {_canonical(a) for a in addresses}
        present = self._entries(base)
        for cidr in sorted(wanted - present):
            with contextlib.suppress(AlreadyExists):  # added by an interrupted pass
                self.client.request("POST", f"{base}/ipset/{IPSET}", cidr=cidr)
        for cidr in sorted(present - wanted):
            self.client.request("DELETE", f"{base}/ipset/{IPSET}/{quote(cidr, safe='')}")
        self.client.request("PUT", f"{base}/options", **OPTIONS)
        log.info("pve.firewall.applied", vmid=vmid, node=node, addresses=sorted(wanted))

    def remove(self, node: str, vmid: int) -> None:
        """Drop the VM's IP set (with its entries); absent counts as done."""
        base = self._base(node, vmid)
        if IPSET in self._ipset_names(base):
            self.client.request("DELETE", f"{base}/ipset/{IPSET}", force=1)
            log.info("pve.firewall.removed", vmid=vmid, node=node)

    def has_ipset(self, node: str, vmid: int) -> bool:
        """Whether the VM has its IP set (a Terraform adoption imports it, not creates it)."""
        return IPSET in self._ipset_names(self._base(node, vmid))

    def addresses(self, node: str, vmid: int) -> set[str]:
        """The entries of the VM's IP set (empty when it has none)."""
        base = self._base(node, vmid)
        return self._entries(base) if IPSET in self._ipset_names(base) else set()

    def _ipset_names(self, base: str) -> set[str]:
        listing = cast("list[dict[str, object]]",
                       self.client.request("GET", f"{base}/ipset") or [])
        return {str(entry.get("name")) for entry in listing}

    def _create_ipset(self, base: str) -> None:
        with contextlib.suppress(AlreadyExists):
            self.client.request("POST", f"{base}/ipset", name=IPSET,
                                comment="blockhost: the VM's own addresses")

    def _entries(self, base: str) -> set[str]:
        listing = cast("list[dict[str, object]]",
                       self.client.request("GET", f"{base}/ipset/{IPSET}") or [])
        return {_canonical(str(entry.get("cidr"))) for entry in listing}


def _canonical(text: str) -> str:
    """One spelling per address (``fd00:0::7`` and ``fd00::7`` are the same entry)."""
    try:
        if "/" in text:
            return str(ipaddress.ip_network(text, strict=False))
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text
