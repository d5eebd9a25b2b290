"""PVE's property strings (``k=v,k2=v2``) and the structured config values built on them.

Network devices, ipconfig, cicustom and tags are parsed the way PVE's JSONSchema formats do,
with PVE's error texts (they reach the client in ``errors``).
"""

from __future__ import annotations

import ipaddress
import re

MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
BRIDGE_RE = re.compile(r"^[-_.\w\d]+$")
VOLUME_RE = re.compile(r"^[a-z][a-z0-9\-_.]*[a-z0-9]:[^\s,]+$")
TAG_RE = re.compile(r"^[a-z0-9_][a-z0-9_\-+.]*$", re.IGNORECASE)

NIC_MODELS = (
    "e1000", "e1000-82540em", "e1000-82544gc", "e1000-82545em", "e1000e", "i82551", "i82557b",
    "i82559er", "ne2k_isa", "ne2k_pci", "pcnet", "rtl8139", "virtio", "vmxnet3",
)
NET_KEYS = ("bridge", "firewall", "link_down", "macaddr", "model", "mtu", "queues", "rate",
            "tag", "trunks")


class FormatError(ValueError):
    pass


def split_list(value: str) -> list[str]:
    """PVE's list splitting for ``-list`` formats: separators are ``,``, ``;`` and whitespace."""
    return [item for item in re.split(r"[,;\s]+", value) if item]


def parse_property_string(value: str, default_key: str | None = None) -> dict[str, str]:
    """Parse ``k=v,k2=v2`` (first item may be a bare default-key value)."""
    out: dict[str, str] = {}
    for i, part in enumerate(value.split(",")):
        if part == "":
            raise FormatError("empty item in property string")
        if "=" in part:
            k, v = part.split("=", 1)
        elif i == 0 and default_key is not None:
            k, v = default_key, part
        else:
            raise FormatError("value without key, but schema does not define a default key: "
                              f"'{part}'")
        if k in out:
            raise FormatError(f"duplicate key in comma-separated list property: {k}")
        out[k] = v
    return out


def check_bool_str(v: str) -> None:
    if v not in ("0", "1"):
        raise FormatError(f"type check ('boolean') failed - got '{v}'")


def check_int_str(v: str, minimum: int | None = None) -> None:
    if not re.fullmatch(r"\d+", v):
        raise FormatError(f"type check ('integer') failed - got '{v}'")
    if minimum is not None and int(v) < minimum:
        raise FormatError(f"value must have a minimum value of {minimum}")


def _net_model(out: dict[str, str], model: str, mac: str) -> None:
    """``<model>=<mac>``: the model keyword carries the MAC address."""
    if "model" in out:
        raise FormatError("duplicate model in network device")
    out["model"] = model
    if mac:
        if not MAC_RE.match(mac):
            raise FormatError(f"invalid format - value '{mac}' is not a valid MAC address")
        out["macaddr"] = mac


def _net_option(k: str, v: str) -> None:
    """Check one ``key=value`` of a network device other than its model."""
    if k not in NET_KEYS:
        raise FormatError(f"invalid format - unknown key '{k}' in network device")
    if k == "macaddr" and not MAC_RE.match(v):
        raise FormatError(f"invalid format - value '{v}' is not a valid MAC address")
    if k == "bridge" and not BRIDGE_RE.match(v):
        raise FormatError(f"invalid format - value '{v}' is not a valid bridge name")
    if k in ("firewall", "link_down"):
        check_bool_str(v)
    if k in ("mtu", "queues", "tag"):
        check_int_str(v, 1)


def parse_net(value: str) -> dict[str, str]:
    """Parse a ``netN`` value into {model, macaddr, bridge, ...}; raises FormatError."""
    out: dict[str, str] = {}
    for i, part in enumerate(value.split(",")):
        if "=" in part:
            k, v = part.split("=", 1)
        else:
            k, v = ("model", part) if i == 0 else (part, "")
        if k in NIC_MODELS:
            _net_model(out, k, v)
            continue
        if k == "model":
            if v not in NIC_MODELS:
                raise FormatError(f"value '{v}' does not have a value in the enumeration "
                                  f"'{', '.join(NIC_MODELS)}'")
            out["model"] = v
            continue
        _net_option(k, v)
        out[k] = v
    if "model" not in out:
        raise FormatError("invalid format - network device has no model")
    return out


def format_net(net: dict[str, str]) -> str:
    """Render a parsed net dict the way PVE writes it: ``model=MAC,bridge=...,...``."""
    parts = [f"{net['model']}={net['macaddr']}" if net.get("macaddr") else net["model"]]
    for k in NET_KEYS:
        if k in ("model", "macaddr"):
            continue
        if k in net:
            parts.append(f"{k}={net[k]}")
    return ",".join(parts)


def _check_ip_addresses(cfg: dict[str, str]) -> None:
    """Raise ValueError unless every address of an ipconfig has the right family and form."""
    if "ip" in cfg and cfg["ip"] != "dhcp":
        iface = ipaddress.ip_interface(cfg["ip"])
        if iface.version != 4 or "/" not in cfg["ip"]:
            raise ValueError
    if "ip6" in cfg and cfg["ip6"] not in ("dhcp", "auto"):
        iface6 = ipaddress.ip_interface(cfg["ip6"])
        if iface6.version != 6 or "/" not in cfg["ip6"]:
            raise ValueError
    if "gw" in cfg and ipaddress.ip_address(cfg["gw"]).version != 4:
        raise ValueError
    if "gw6" in cfg and ipaddress.ip_address(cfg["gw6"]).version != 6:
        raise ValueError


def parse_ipconfig(value: str) -> dict[str, str]:
    cfg = parse_property_string(value)
    for k in cfg:
        if k not in ("ip", "gw", "ip6", "gw6"):
            raise FormatError(f"invalid format - unknown key '{k}' in ipconfig")
    try:
        _check_ip_addresses(cfg)
    except ValueError:
        raise FormatError("invalid format - invalid IP address/CIDR in ipconfig") from None
    if "gw" in cfg and cfg.get("ip", "dhcp") == "dhcp":
        raise FormatError("gateway specified without specifying an IP address")
    if "gw6" in cfg and cfg.get("ip6", "dhcp") in ("dhcp", "auto"):
        raise FormatError("gateway specified without specifying an IP address")
    return cfg


def parse_cicustom(value: str) -> dict[str, str]:
    cfg = parse_property_string(value)
    for k, v in cfg.items():
        if k not in ("meta", "network", "user", "vendor"):
            raise FormatError(f"invalid format - unknown key '{k}' in cicustom")
        if not VOLUME_RE.match(v):
            raise FormatError(f"invalid format - unable to parse volume ID '{v}'")
    return cfg


def parse_tags(value: str) -> list[str]:
    tags = split_list(value)
    for tag in tags:
        if not TAG_RE.match(tag):
            raise FormatError(f"invalid format - invalid characters in tag '{tag}'")
    return tags
