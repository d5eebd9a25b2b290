"""A VM's firewall configuration (``/etc/pve/firewall/<vmid>.fw``): options and IP sets.

It lives inside the VM's record, so it goes when the VM is destroyed, and a clone copies the
source's, both as PVE does. Entries are kept as PVE stores them (address or CIDR text, in the
order they were added); the digest covers the whole file like PVE's.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from typing import Any

from provisioner.pvesim.core.records import FirewallRecord, IpsetRecord, VmRecord
from provisioner.pvesim.errors import SimError


def firewall_of(vm: VmRecord) -> FirewallRecord:
    """The VM's firewall config, created empty on first use (PVE: an absent .fw file)."""
    if "firewall" not in vm:
        vm["firewall"] = {"options": {}, "ipsets": {}}
    return vm["firewall"]


def firewall_digest(fw: FirewallRecord) -> str:
    """SHA1 over the whole firewall config (the compare-and-set token of every listing)."""
    return hashlib.sha1(json.dumps(fw, sort_keys=True).encode()).hexdigest()


def check_digest(fw: FirewallRecord, digest: str | None) -> None:
    """PVE's ``assert_if_modified``."""
    if digest and digest != firewall_digest(fw):
        raise SimError(500, "detected modified configuration - file changed by other user? "
                            "Try again.")


def ipset_of(fw: FirewallRecord, name: str) -> IpsetRecord:
    ipset = fw["ipsets"].get(name)
    if ipset is None:
        raise SimError(500, f"no such IPSet '{name}'")
    return ipset


def canonical_cidr(text: str) -> str:
    """An address or network as PVE accepts it in an IP set (host bits must be zero)."""
    try:
        if "/" in text:
            return str(ipaddress.ip_network(text, strict=True))
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise SimError(400, "Parameter verification failed.",
                       {"cidr": f"value does not look like a valid IP address or CIDR "
                                f"network: {text}"}) from None


def entry_view(entry: dict[str, Any], digest: str) -> dict[str, Any]:
    view = {k: v for k, v in entry.items() if v is not None}
    view["digest"] = digest
    return view
