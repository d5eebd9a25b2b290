"""The named string formats of PVE's JSONSchema (``format: pve-node`` and so on).

Each checker raises FormatError with PVE's own text; ``FORMATS`` maps a format name (as used
in the parameter table) to its checker.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

from provisioner.pvesim.property_strings import (
    FormatError,
    check_bool_str,
    check_int_str,
    parse_cicustom,
    parse_ipconfig,
    parse_net,
    parse_property_string,
    parse_tags,
    split_list,
)

_DNS_LABEL = r"[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?"
DNS_NAME_RE = re.compile(rf"^({_DNS_LABEL}\.)*{_DNS_LABEL}$")
NODE_RE = re.compile(rf"^{_DNS_LABEL}$")
POOLID_RE = re.compile(r"^[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-]+){0,2}$")
STORAGE_ID_RE = re.compile(r"^[a-z][a-z0-9\-_.]*[a-z0-9]$")
URLENCODED_RE = re.compile(r"^[-%a-zA-Z0-9_.!~*'()]*$")
CONFIGID_RE = re.compile(r"^[a-z][a-z_\-]*\d*$")
UUID_RE = re.compile(r"^[a-fA-F0-9]{8}(-[a-fA-F0-9]{4}){3}-[a-fA-F0-9]{12}$")
UPID_RE = re.compile(
    r"^UPID:([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):"
    r"([0-9A-Fa-f]{8}):([^:\s]+):([^:\s]*):([^:\s]+):$"
)
_AGENT_FLAGS = ("enabled", "freeze-fs", "freeze-fs-on-backup", "fstrim_cloned_disks")
_SMBIOS_KEYS = {"base64", "family", "manufacturer", "product", "serial", "sku", "uuid", "version"}


def _fmt_dns_name(v: str) -> None:
    if not DNS_NAME_RE.match(v):
        raise FormatError("invalid format - value does not look like a valid DNS name")


def _fmt_node(v: str) -> None:
    if not NODE_RE.match(v):
        raise FormatError("invalid format - value does not look like a valid node name")


def _fmt_poolid(v: str) -> None:
    if not POOLID_RE.match(v):
        raise FormatError(f"invalid format - invalid pool ID '{v}'")


def _fmt_storage(v: str) -> None:
    if not STORAGE_ID_RE.match(v):
        raise FormatError(f"invalid format - storage ID '{v}' contains illegal characters")


def _fmt_tags(v: str) -> None:
    parse_tags(v)


def _fmt_urlencoded(v: str) -> None:
    if not URLENCODED_RE.match(v):
        raise FormatError(f"invalid format - invalid urlencoded string: {v}")


def _fmt_configid_list(v: str) -> None:
    for item in split_list(v):
        if not CONFIGID_RE.match(item):
            raise FormatError(f"invalid format - invalid configuration ID '{item}'")


def _fmt_ipconfig(v: str) -> None:
    parse_ipconfig(v)


def _fmt_cicustom(v: str) -> None:
    parse_cicustom(v)


def _fmt_net(v: str) -> None:
    parse_net(v)


def _fmt_memory(v: str) -> None:
    cfg = parse_property_string(v, default_key="current")
    if set(cfg) - {"current"}:
        raise FormatError("invalid format - unknown key in memory")
    check_int_str(cfg.get("current", ""), 16)


def _fmt_agent(v: str) -> None:
    cfg = parse_property_string(v, default_key="enabled")
    for k, val in cfg.items():
        if k in _AGENT_FLAGS:
            check_bool_str(val)
        elif k == "type":
            if val not in ("virtio", "isa"):
                raise FormatError(
                    f"value '{val}' does not have a value in the enumeration 'virtio, isa'")
        else:
            raise FormatError(f"invalid format - unknown key '{k}' in agent")


def _fmt_address_list(v: str) -> None:
    for item in split_list(v):
        try:
            ipaddress.ip_address(item)
        except ValueError:
            raise FormatError(
                f"invalid format - value '{item}' is not a valid IP address") from None


def _fmt_smbios1(v: str) -> None:
    cfg = parse_property_string(v)
    for k, val in cfg.items():
        if k not in _SMBIOS_KEYS:
            raise FormatError(f"invalid format - unknown key '{k}' in smbios1")
        if k == "uuid" and not UUID_RE.match(val):
            raise FormatError(f"invalid format - invalid UUID '{val}'")


def _fmt_volume_prop(v: str) -> None:
    # disks: "[file=]<volume>,k=v,..." — the simulator keeps them opaque past a basic parse
    cfg = parse_property_string(v, default_key="file")
    if not cfg.get("file"):
        raise FormatError("invalid format - missing volume")


def _fmt_upid(v: str) -> None:
    if not UPID_RE.match(v):
        raise FormatError(f"unable to parse worker upid '{v}'")


def _fmt_vga(v: str) -> None:
    parse_property_string(v, default_key="type")


FORMATS: dict[str, Callable[[str], None]] = {
    "dns-name": _fmt_dns_name,
    "pve-node": _fmt_node,
    "pve-poolid": _fmt_poolid,
    "pve-storage-id": _fmt_storage,
    "pve-tag-list": _fmt_tags,
    "urlencoded": _fmt_urlencoded,
    "pve-configid-list": _fmt_configid_list,
    "pve-qm-ipconfig": _fmt_ipconfig,
    "pve-qm-cicustom": _fmt_cicustom,
    "net": _fmt_net,
    "memory": _fmt_memory,
    "agent": _fmt_agent,
    "address-list": _fmt_address_list,
    "pve-qm-smbios1": _fmt_smbios1,
    "volume-prop": _fmt_volume_prop,
    "upid": _fmt_upid,
    "vga": _fmt_vga,
}
