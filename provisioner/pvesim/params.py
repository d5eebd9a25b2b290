"""The simulator's own parameter table: what each endpoint accepts, and how it is verified.

Written from the PVE API documentation (types, optional flags, enums, ranges, formats and the
error texts of PVE's JSONSchema verifier). Nothing here is read from ``../shared`` at runtime;
the test-suite cross-checks this table against the real schema subset when that file exists.

Every endpoint rejects unknown parameters with HTTP 400 and
``errors[param] = "property is not defined in schema and the schema does not allow additional
properties"``, as PVE does (``additionalProperties: 0`` on all of them).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

UNKNOWN_PROPERTY = (
    "property is not defined in schema and the schema does not allow additional properties"
)
MISSING_PROPERTY = "property is missing and it is not optional"


@dataclass(frozen=True)
class P:
    """One parameter of one endpoint."""

    type: str  # "string" | "integer" | "boolean" | "number"
    optional: bool = True
    enum: tuple[str, ...] | None = None
    minimum: int | float | None = None
    maximum: int | float | None = None
    max_length: int | None = None
    pattern: str | None = None
    fmt: str | None = None  # a key of FORMATS
    requires: str | None = None


class ParamError(Exception):
    """Parameter verification failed: ``errors`` maps parameter name -> message."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("Parameter verification failed.")
        self.errors = errors


# ---------------------------------------------------------------------------------------------
# formats

_DNS_LABEL = r"[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?"
DNS_NAME_RE = re.compile(rf"^({_DNS_LABEL}\.)*{_DNS_LABEL}$")
NODE_RE = re.compile(rf"^{_DNS_LABEL}$")
POOLID_RE = re.compile(r"^[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-]+){0,2}$")
STORAGE_ID_RE = re.compile(r"^[a-z][a-z0-9\-_.]*[a-z0-9]$")
TAG_RE = re.compile(r"^[a-z0-9_][a-z0-9_\-+.]*$", re.IGNORECASE)
URLENCODED_RE = re.compile(r"^[-%a-zA-Z0-9_.!~*'()]*$")
CONFIGID_RE = re.compile(r"^[a-z][a-z_\-]*\d*$")
MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
BRIDGE_RE = re.compile(r"^[-_.\w\d]+$")
VOLUME_RE = re.compile(r"^[a-z][a-z0-9\-_.]*[a-z0-9]:[^\s,]+$")
UUID_RE = re.compile(r"^[a-fA-F0-9]{8}(-[a-fA-F0-9]{4}){3}-[a-fA-F0-9]{12}$")
UPID_RE = re.compile(
    r"^UPID:([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):"
    r"([0-9A-Fa-f]{8}):([^:\s]+):([^:\s]*):([^:\s]+):$"
)

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
            raise FormatError(f"value without key, but schema does not define a default key: '{part}'")
        if k in out:
            raise FormatError(f"duplicate key in comma-separated list property: {k}")
        out[k] = v
    return out


def _check_bool_str(v: str) -> None:
    if v not in ("0", "1"):
        raise FormatError(f"type check ('boolean') failed - got '{v}'")


def _check_int_str(v: str, minimum: int | None = None) -> None:
    if not re.fullmatch(r"\d+", v):
        raise FormatError(f"type check ('integer') failed - got '{v}'")
    if minimum is not None and int(v) < minimum:
        raise FormatError(f"value must have a minimum value of {minimum}")


def parse_net(value: str) -> dict[str, str]:
    """Parse a ``netN`` value into {model, macaddr, bridge, ...}; raises FormatError."""
    out: dict[str, str] = {}
    for i, part in enumerate(value.split(",")):
        if "=" in part:
            k, v = part.split("=", 1)
        else:
            k, v = ("model", part) if i == 0 else (part, "")
        if k in NIC_MODELS:
            if "model" in out:
                raise FormatError("duplicate model in network device")
            out["model"] = k
            if v:
                if not MAC_RE.match(v):
                    raise FormatError(f"invalid format - value '{v}' is not a valid MAC address")
                out["macaddr"] = v
            continue
        if k == "model":
            if v not in NIC_MODELS:
                raise FormatError(f"value '{v}' does not have a value in the enumeration "
                                  f"'{', '.join(NIC_MODELS)}'")
            out["model"] = v
            continue
        if k not in NET_KEYS:
            raise FormatError(f"invalid format - unknown key '{k}' in network device")
        if k == "macaddr" and not MAC_RE.match(v):
            raise FormatError(f"invalid format - value '{v}' is not a valid MAC address")
        if k == "bridge" and not BRIDGE_RE.match(v):
            raise FormatError(f"invalid format - value '{v}' is not a valid bridge name")
        if k in ("firewall", "link_down"):
            _check_bool_str(v)
        if k in ("mtu", "queues", "tag"):
            _check_int_str(v, 1)
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


def parse_ipconfig(value: str) -> dict[str, str]:
    cfg = parse_property_string(value)
    for k in cfg:
        if k not in ("ip", "gw", "ip6", "gw6"):
            raise FormatError(f"invalid format - unknown key '{k}' in ipconfig")
    try:
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
    _check_int_str(cfg.get("current", ""), 16)


def _fmt_agent(v: str) -> None:
    cfg = parse_property_string(v, default_key="enabled")
    for k, val in cfg.items():
        if k in ("enabled", "freeze-fs", "freeze-fs-on-backup", "fstrim_cloned_disks"):
            _check_bool_str(val)
        elif k == "type":
            if val not in ("virtio", "isa"):
                raise FormatError(f"value '{val}' does not have a value in the enumeration 'virtio, isa'")
        else:
            raise FormatError(f"invalid format - unknown key '{k}' in agent")


def _fmt_address_list(v: str) -> None:
    for item in split_list(v):
        try:
            ipaddress.ip_address(item)
        except ValueError:
            raise FormatError(f"invalid format - value '{item}' is not a valid IP address") from None


def _fmt_smbios1(v: str) -> None:
    cfg = parse_property_string(v)
    allowed = {"base64", "family", "manufacturer", "product", "serial", "sku", "uuid", "version"}
    for k, val in cfg.items():
        if k not in allowed:
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


FORMATS = {
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

# ---------------------------------------------------------------------------------------------
# the table

NODE = P("string", optional=False, fmt="pve-node")
VMID = P("integer", optional=False, minimum=100, maximum=999999999)
SKIPLOCK = P("boolean")
RESIZE_DISKS = tuple(
    [f"ide{i}" for i in range(4)] + [f"scsi{i}" for i in range(31)]
    + [f"virtio{i}" for i in range(16)] + [f"sata{i}" for i in range(6)]
    + ["efidisk0", "tpmstate0"]
)

#: indexed parameter families and how many indices PVE allows
INDEXED = {"net": 32, "ipconfig": 32, "scsi": 31, "ide": 4, "sata": 6, "virtio": 16,
           "unused": 256, "serial": 4, "usb": 14, "hostpci": 16}

#: VM config keys settable through PUT/POST config (a subset of what PVE knows; the rest of
#: PVE's keys are rejected as unknown, which a test keeps in line with the real schema)
CONFIG_KEYS: dict[str, P] = {
    "acpi": P("boolean"),
    "agent": P("string", fmt="agent"),
    "balloon": P("integer", minimum=0),
    "bios": P("string", enum=("seabios", "ovmf")),
    "boot": P("string"),
    "cicustom": P("string", fmt="pve-qm-cicustom"),
    "cipassword": P("string"),
    "citype": P("string", enum=("configdrive2", "nocloud", "opennebula")),
    "ciupgrade": P("boolean"),
    "ciuser": P("string"),
    "cores": P("integer", minimum=1),
    "cpu": P("string"),
    "cpulimit": P("number", minimum=0, maximum=128),
    "cpuunits": P("integer", minimum=1, maximum=262144),
    "description": P("string", max_length=8192),
    "hotplug": P("string"),
    "ide[n]": P("string", fmt="volume-prop"),
    "ipconfig[n]": P("string", fmt="pve-qm-ipconfig"),
    "kvm": P("boolean"),
    "localtime": P("boolean"),
    "lock": P("string", enum=("backup", "clone", "create", "migrate", "rollback", "snapshot",
                              "snapshot-delete", "suspending", "suspended")),
    "memory": P("string", fmt="memory"),
    "name": P("string", fmt="dns-name"),
    "nameserver": P("string", fmt="address-list"),
    "net[n]": P("string", fmt="net"),
    "numa": P("boolean"),
    "onboot": P("boolean"),
    "ostype": P("string", enum=("other", "wxp", "w2k", "w2k3", "w2k8", "wvista", "win7", "win8",
                                "win10", "win11", "l24", "l26", "solaris")),
    "protection": P("boolean"),
    "sata[n]": P("string", fmt="volume-prop"),
    "scsi[n]": P("string", fmt="volume-prop"),
    "scsihw": P("string", enum=("lsi", "lsi53c810", "virtio-scsi-pci", "virtio-scsi-single",
                                "megasas", "pvscsi")),
    "searchdomain": P("string"),
    "serial[n]": P("string", pattern=r"(/dev/.+|socket)"),
    "smbios1": P("string", max_length=512, fmt="pve-qm-smbios1"),
    "sockets": P("integer", minimum=1),
    "sshkeys": P("string", fmt="urlencoded"),
    "startup": P("string"),
    "tablet": P("boolean"),
    "tags": P("string", fmt="pve-tag-list"),
    "unused[n]": P("string", fmt="volume-prop"),
    "vcpus": P("integer", minimum=1),
    "vga": P("string", fmt="vga"),
    "virtio[n]": P("string", fmt="volume-prop"),
    "vmgenid": P("string", pattern=r"(?:[a-fA-F0-9]{8}(?:-[a-fA-F0-9]{4}){3}-[a-fA-F0-9]{12}|[01])"),
}

CONFIG_UPDATE_EXTRA: dict[str, P] = {
    "node": NODE,
    "vmid": VMID,
    "delete": P("string", fmt="pve-configid-list"),
    "digest": P("string", max_length=40),
    "force": P("boolean", requires="delete"),
    "skiplock": SKIPLOCK,
}

ENDPOINTS: dict[tuple[str, str], dict[str, P]] = {
    ("GET", "/version"): {},
    ("GET", "/nodes"): {},
    ("GET", "/cluster/resources"): {"type": P("string", enum=("vm", "storage", "node", "sdn"))},
    ("GET", "/cluster/nextid"): {"vmid": P("integer", minimum=100, maximum=999999999)},
    ("GET", "/pools"): {"poolid": P("string", fmt="pve-poolid"),
                        "type": P("string", enum=("qemu", "lxc", "storage"))},
    ("GET", "/pools/{poolid}"): {"poolid": P("string", optional=False, fmt="pve-poolid"),
                                 "type": P("string", enum=("qemu", "lxc", "storage"))},
    ("GET", "/nodes/{node}/qemu"): {"node": NODE, "full": P("boolean")},
    ("POST", "/nodes/{node}/qemu"): {
        **CONFIG_KEYS, "node": NODE, "vmid": VMID,
        "pool": P("string", fmt="pve-poolid"),
        "start": P("boolean"),
        "storage": P("string", fmt="pve-storage-id"),
        "template": P("boolean"),
    },
    ("POST", "/nodes/{node}/qemu/{vmid}/template"): {
        "node": NODE, "vmid": VMID, "disk": P("string", enum=RESIZE_DISKS),
    },
    ("GET", "/nodes/{node}/qemu/{vmid}"): {"node": NODE, "vmid": VMID},
    ("DELETE", "/nodes/{node}/qemu/{vmid}"): {
        "node": NODE, "vmid": VMID, "purge": P("boolean"),
        "destroy-unreferenced-disks": P("boolean"), "skiplock": SKIPLOCK,
    },
    ("POST", "/nodes/{node}/qemu/{vmid}/clone"): {
        "node": NODE, "vmid": VMID,
        "newid": P("integer", optional=False, minimum=100, maximum=999999999),
        "name": P("string", fmt="dns-name"),
        "description": P("string"),
        "pool": P("string", fmt="pve-poolid"),
        "full": P("boolean"),
        "storage": P("string", fmt="pve-storage-id"),
        "format": P("string", enum=("raw", "qcow2", "vmdk")),
        "target": P("string", fmt="pve-node"),
        "bwlimit": P("integer", minimum=0),
    },
    ("GET", "/nodes/{node}/qemu/{vmid}/config"): {
        "node": NODE, "vmid": VMID, "current": P("boolean"),
    },
    ("PUT", "/nodes/{node}/qemu/{vmid}/config"): {**CONFIG_KEYS, **CONFIG_UPDATE_EXTRA},
    ("POST", "/nodes/{node}/qemu/{vmid}/config"): {
        **CONFIG_KEYS, **CONFIG_UPDATE_EXTRA,
        "background_delay": P("integer", minimum=1, maximum=30),
    },
    ("PUT", "/nodes/{node}/qemu/{vmid}/resize"): {
        "node": NODE, "vmid": VMID,
        "disk": P("string", optional=False, enum=RESIZE_DISKS),
        "size": P("string", optional=False, pattern=r"\+?\d+(\.\d+)?[KMGT]?"),
        "digest": P("string", max_length=40),
        "skiplock": SKIPLOCK,
    },
    ("GET", "/nodes/{node}/qemu/{vmid}/status/current"): {"node": NODE, "vmid": VMID},
    ("POST", "/nodes/{node}/qemu/{vmid}/status/start"): {
        "node": NODE, "vmid": VMID, "skiplock": SKIPLOCK, "timeout": P("integer", minimum=0),
    },
    ("POST", "/nodes/{node}/qemu/{vmid}/status/shutdown"): {
        "node": NODE, "vmid": VMID, "skiplock": SKIPLOCK, "timeout": P("integer", minimum=0),
        "forceStop": P("boolean"), "keepActive": P("boolean"),
    },
    ("POST", "/nodes/{node}/qemu/{vmid}/status/stop"): {
        "node": NODE, "vmid": VMID, "skiplock": SKIPLOCK, "timeout": P("integer", minimum=0),
        "keepActive": P("boolean"), "overrule-shutdown": P("boolean"),
    },
    ("POST", "/nodes/{node}/qemu/{vmid}/agent/ping"): {"node": NODE, "vmid": VMID},
    ("GET", "/nodes/{node}/tasks/{upid}/status"): {
        "node": NODE, "upid": P("string", optional=False, fmt="upid"),
    },
    ("GET", "/nodes/{node}/tasks/{upid}/log"): {
        "node": NODE, "upid": P("string", optional=False, fmt="upid"),
        "start": P("integer", minimum=0), "limit": P("integer", minimum=0),
        "download": P("boolean"),
    },
}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _lookup_spec(table: dict[str, P], name: str) -> tuple[str, P] | None:
    if name in table:
        return name, table[name]
    m = re.fullmatch(r"([a-z]+)(\d+)", name)
    if m and f"{m.group(1)}[n]" in table:
        family, idx = m.group(1), int(m.group(2))
        if idx < INDEXED.get(family, 0) and str(idx) == m.group(2):
            return f"{m.group(1)}[n]", table[f"{m.group(1)}[n]"]
    return None


def is_known_key(table: dict[str, P], name: str) -> bool:
    return _lookup_spec(table, name) is not None


def _convert(name: str, spec: P, raw: Any) -> Any:
    if spec.type == "boolean":
        s = str(raw).strip().lower()
        if s in _TRUE:
            return 1
        if s in _FALSE:
            return 0
        raise FormatError(f"type check ('boolean') failed - got '{raw}'")
    if spec.type == "integer":
        s = str(raw).strip()
        if not re.fullmatch(r"[+-]?\d+", s):
            raise FormatError(f"type check ('integer') failed - got '{raw}'")
        value: Any = int(s)
    elif spec.type == "number":
        s = str(raw).strip()
        if not re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", s):
            raise FormatError(f"type check ('number') failed - got '{raw}'")
        value = float(s)
    else:
        value = str(raw)
    if spec.enum is not None and value not in spec.enum:
        raise FormatError(
            f"value '{value}' does not have a value in the enumeration '{', '.join(spec.enum)}'"
        )
    if spec.minimum is not None and value < spec.minimum:
        raise FormatError(f"value must have a minimum value of {spec.minimum}")
    if spec.maximum is not None and value > spec.maximum:
        raise FormatError(f"value must have a maximum value of {spec.maximum}")
    if spec.max_length is not None and len(value) > spec.max_length:
        raise FormatError(f"value may only be {spec.max_length} characters long")
    if spec.pattern is not None and not re.fullmatch(spec.pattern, value):
        raise FormatError("value does not match the regex pattern")
    if spec.fmt is not None:
        FORMATS[spec.fmt](value)
    return value


def verify(method: str, template: str, params: dict[str, Any]) -> dict[str, Any]:
    """Verify and convert ``params`` for an endpoint; raises ParamError (HTTP 400)."""
    table = ENDPOINTS[(method, template)]
    errors: dict[str, str] = {}
    out: dict[str, Any] = {}
    for name, raw in params.items():
        found = _lookup_spec(table, name)
        if found is None:
            errors[name] = UNKNOWN_PROPERTY
            continue
        _, spec = found
        try:
            out[name] = _convert(name, spec, raw)
        except FormatError as exc:
            errors[name] = str(exc)
    for name, spec in table.items():
        if not spec.optional and "[n]" not in name and name not in params and name not in errors:
            errors[name] = MISSING_PROPERTY
        if spec.requires and name in params and spec.requires not in params:
            errors[spec.requires] = f"missing property - '{name}' requires this property"
    if errors:
        raise ParamError(errors)
    return out
