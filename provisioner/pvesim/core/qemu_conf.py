"""Values of a qemu-server config as PVE writes them: disks, sizes, MACs, SMBIOS, digest.

Pure functions over strings and config dicts, shared by every operation that reads or rewrites
a VM's config.
"""

from __future__ import annotations

import hashlib
import random
import re
import uuid

from provisioner.pvesim.core.records import VmConfig
from provisioner.pvesim.property_strings import FormatError, parse_property_string

DISK_KEY_RE = re.compile(r"^(ide|sata|scsi|virtio)\d+$|^efidisk0$|^tpmstate0$")
_SIZE_RE = re.compile(r"^(\+)?(\d+(?:\.\d+)?)([KMGT]?)$")
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def gen_mac() -> str:
    """A MAC in Proxmox's own OUI, as PVE picks for a new NIC."""
    return "BC:24:11:" + ":".join(f"{random.randint(0, 255):02X}" for _ in range(3))


def parse_size(text: str) -> int:
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(text)
    return int(float(m.group(2)) * _UNITS[m.group(3)])


def format_size(size: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return str(size)


def config_digest(config: VmConfig) -> str:
    """SHA1 over the config rendered like a qemu-server .conf file (description as comments)."""
    lines: list[str] = []
    desc = config.get("description")
    if desc:
        lines.extend("#" + line for line in str(desc).split("\n"))
    for key in sorted(k for k in config if k != "description"):
        lines.append(f"{key}: {config[key]}")
    return hashlib.sha1(("\n".join(lines) + "\n").encode()).hexdigest()


def smbios_uuid(config: VmConfig) -> str | None:
    raw = config.get("smbios1")
    if not raw:
        return None
    for part in str(raw).split(","):
        if part.startswith("uuid="):
            return part[5:]
    return None


def replace_smbios_uuid(raw: str | None) -> str:
    """A fresh ``uuid=`` first, the other SMBIOS fields kept (what a clone gets)."""
    parts = [p for p in (raw or "").split(",") if p and not p.startswith("uuid=")]
    return ",".join([f"uuid={uuid.uuid4()}", *parts])


def volume_of(value: str) -> tuple[str, list[str]]:
    """``[file=]<volume>,opt,...`` -> (volume, [opt, ...])."""
    items = value.split(",")
    vol = items[0][5:] if items[0].startswith("file=") else items[0]
    return vol, items[1:]


def disk_size(value: str) -> int | None:
    _, opts = volume_of(value)
    for opt in opts:
        if opt.startswith("size="):
            try:
                return parse_size(opt[5:])
            except ValueError:
                return None
    return None


def is_cdrom(value: str) -> bool:
    return "media=cdrom" in value.split(",")[1:]


def is_net_key(key: str) -> bool:
    """``net0``, ``net1``, ... (not ``nameserver``)."""
    return key.startswith("net") and key[3:].isdigit()


def agent_enabled(config: VmConfig) -> bool:
    raw = str(config.get("agent", "0"))
    try:
        return parse_property_string(raw, "enabled").get("enabled", "0") == "1"
    except FormatError:
        return False
