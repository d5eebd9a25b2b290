"""PVE's value formats, read and written: ``net0``, ``ipconfig0``, ``sshkeys``, tags and disk
sizes. Pure functions, so each format is checked in one place."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote

GIB = 1024**3
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)([KMGT]?)$")
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_DISK_KEYS = tuple([f"scsi{i}" for i in range(31)] + [f"virtio{i}" for i in range(16)]
                   + [f"sata{i}" for i in range(6)] + [f"ide{i}" for i in range(4)])
_NIC_MODELS = ("virtio", "e1000", "e1000e", "rtl8139", "vmxnet3", "i82551", "i82557b",
               "i82559er", "ne2k_isa", "ne2k_pci", "pcnet", "e1000-82540em", "e1000-82544gc",
               "e1000-82545em")
_NIC_KEPT = ("firewall", "mtu", "queues", "rate", "tag", "trunks", "link_down")
_MAC_RE = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")


def encode_sshkeys(keys: str) -> str:
    """PVE's ``sshkeys`` must be strictly percent-encoded (``quote_plus`` is wrong)."""
    return quote(keys, safe="")


def build_ipconfig(ipv4_cidr: str | None, gateway4: str | None, ipv6_cidr: str | None,
                   gateway6: str | None) -> str | None:
    """``ip=...,gw=...,ip6=...,gw6=...`` for ipconfig0 from validated addresses; None if no
    address is given. Raises ValueError on malformed or mismatched input."""
    parts = [*_ip_parts(4, ipv4_cidr, gateway4, "ip", "gw"),
             *_ip_parts(6, ipv6_cidr, gateway6, "ip6", "gw6")]
    return ",".join(parts) or None


def _ip_parts(version: int, cidr: str | None, gateway: str | None, ip_key: str,
              gw_key: str) -> list[str]:
    """One address family's ``ip`` / ``gw`` parts of ipconfig0."""
    if not cidr:
        if gateway:
            raise ValueError(f"gateway{version} given without ipv{version}_cidr")
        return []
    iface = ipaddress.ip_interface(cidr)
    if iface.version != version or "/" not in cidr:
        raise ValueError(f"not an IPv{version} CIDR: {cidr!r}")
    parts = [f"{ip_key}={iface.with_prefixlen}"]
    if gateway:
        gw = ipaddress.ip_address(gateway)
        if gw.version != version:
            raise ValueError(f"not an IPv{version} gateway: {gateway!r}")
        parts.append(f"{gw_key}={gw}")
    return parts


def split_tags(raw: str) -> tuple[str, ...]:
    """PVE's tag list (``;``-separated, older versions also ``,`` or spaces)."""
    return tuple(t for t in re.split(r"[;,\s]+", raw) if t)


def join_tags(tags: Iterable[str]) -> str:
    """The ``tags`` value: unique, sorted, ``;``-separated."""
    return ";".join(sorted(set(tags)))


def _parse_size(text: str) -> int | None:
    m = _SIZE_RE.match(text.strip())
    if not m:
        return None
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def disk_size(value: str) -> int | None:
    """The ``size=`` of a disk value (``local-lvm:vm-1-disk-0,size=8G``) in bytes."""
    for opt in str(value).split(",")[1:]:
        if opt.startswith("size="):
            return _parse_size(opt[5:])
    return None


def boot_disk(config: Mapping[str, object]) -> str | None:
    """The key of the disk the VM boots from: the first sized, non-cdrom disk in the boot
    order, else in PVE's bus order."""
    boot = str(config.get("boot") or "")
    order: list[str] = []
    if boot.startswith("order="):
        order = [d for d in boot[6:].split(";") if d]
    for key in [*order, *_DISK_KEYS]:
        value = config.get(key)
        if value and "media=cdrom" not in str(value).split(",")[1:] \
                and disk_size(str(value)) is not None:
            return key
    return None


def net0_value(existing: str | None, bridge: str) -> str:
    """``virtio=<kept MAC>,bridge=<bridge>[,other kept options]``."""
    mac = None
    keep: list[str] = []
    for part in (existing or "").split(","):
        key, sep, value = part.partition("=")
        if key in _NIC_MODELS:
            if sep and _MAC_RE.match(value):
                mac = value
        elif key == "macaddr" and _MAC_RE.match(value):
            mac = value
        elif key in _NIC_KEPT:
            keep.append(part)
    head = f"virtio={mac}" if mac else "virtio"
    return ",".join([head, f"bridge={bridge}", *keep])
