"""The tenant-isolation resources of one VM for the bpg/proxmox provider: the
``ipfilter-net0`` IP set holding exactly the VM's addresses and the VM's firewall options
(:mod:`provisioner.proxmox.firewall` explains why; this is the same policy as Terraform).

The provider's defaults differ from PVE's (``ndp`` false, ``radv`` true, ``input_policy``
DROP), so every flag is stated: a tenant must not send router advertisements, IPv6 neighbour
discovery must keep working, and nothing but spoofed traffic is filtered.
"""

from __future__ import annotations

from typing import Any

from provisioner.backend import VMSpec
from provisioner.proxmox.firewall import IPSET, tenant_addresses

IPSET_RESOURCE = "proxmox_virtual_environment_firewall_ipset"
OPTIONS_RESOURCE = "proxmox_virtual_environment_firewall_options"
IPSET_NAME = "ipfilter"
OPTIONS_NAME = "vm"
IPSET_ADDRESS = f"{IPSET_RESOURCE}.{IPSET_NAME}"
OPTIONS_ADDRESS = f"{OPTIONS_RESOURCE}.{OPTIONS_NAME}"

#: the VM's firewall options (provider attribute names)
OPTIONS: dict[str, Any] = {"enabled": True, "ipfilter": True, "macfilter": True, "dhcp": False,
                           "ndp": True, "radv": False, "input_policy": "ACCEPT",
                           "output_policy": "ACCEPT"}


def ipset_import_id(node: str, vmid: int) -> str:
    """bpg's import id for a VM's IP set (firewall/ipset.go): ``vm/<node>/<vmid>/<name>``."""
    return f"vm/{node}/{vmid}/{IPSET}"


def firewall_resources(spec: VMSpec, vm_address: str) -> dict[str, Any]:
    """The two resources, keyed by resource type; ``vm_address`` is the VM they depend on.
    Returned as plain values: the caller wraps the ``depends_on`` addresses as expressions."""
    selector = {"node_name": spec.node, "vm_id": spec.vmid}
    ipset = {**selector, "name": IPSET, "comment": "blockhost: the VM's own addresses",
             "cidr": [{"name": a} for a in tenant_addresses(spec)],
             "depends_on": [vm_address]}
    options = {**selector, **OPTIONS, "depends_on": [vm_address, IPSET_ADDRESS]}
    return {IPSET_RESOURCE: {IPSET_NAME: ipset}, OPTIONS_RESOURCE: {OPTIONS_NAME: options}}
