"""The simulator's own parameter table: what each endpoint accepts.

Written from the PVE API documentation (types, optional flags, enums, ranges, formats and the
error texts of PVE's JSONSchema verifier). Nothing here is read from ``../shared`` at runtime;
the test-suite cross-checks this table against the real schema subset. The checking itself is
in :mod:`provisioner.pvesim.param_verify`.

Every endpoint rejects unknown parameters with HTTP 400 and
``errors[param] = "property is not defined in schema and the schema does not allow additional
properties"``, as PVE does (``additionalProperties: 0`` on all of them).
"""

from __future__ import annotations

from dataclasses import dataclass

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
    fmt: str | None = None  # a key of param_formats.FORMATS
    requires: str | None = None


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
    "vmgenid": P("string",
                 pattern=r"(?:[a-fA-F0-9]{8}(?:-[a-fA-F0-9]{4}){3}-[a-fA-F0-9]{12}|[01])"),
}

CONFIG_UPDATE_EXTRA: dict[str, P] = {
    "node": NODE,
    "vmid": VMID,
    "delete": P("string", fmt="pve-configid-list"),
    "digest": P("string", max_length=40),
    "force": P("boolean", requires="delete"),
    "skiplock": SKIPLOCK,
}

#: PVE's userid (``user@realm``) or full token id (``user@realm!token``)
USERID_PATTERN = r"[^\s:/]+@[A-Za-z][A-Za-z0-9.\-_]+(?:![A-Za-z][A-Za-z0-9.\-_]+)?"

ENDPOINTS: dict[tuple[str, str], dict[str, P]] = {
    ("GET", "/version"): {},
    ("GET", "/access/permissions"): {
        "path": P("string"),
        "userid": P("string", pattern=USERID_PATTERN)},
    ("GET", "/nodes"): {},
    ("GET", "/cluster/resources"): {"type": P("string", enum=("vm", "storage", "node", "sdn"))},
    ("GET", "/cluster/nextid"): {"vmid": P("integer", minimum=100, maximum=999999999)},
    ("GET", "/pools"): {"poolid": P("string", fmt="pve-poolid"),
                        "type": P("string", enum=("qemu", "lxc", "storage"))},
    ("GET", "/pools/{poolid}"): {"poolid": P("string", optional=False, fmt="pve-poolid"),
                                 "type": P("string", enum=("qemu", "lxc", "storage"))},
    ("PUT", "/pools/{poolid}"): {
        "poolid": P("string", optional=False, fmt="pve-poolid"),
        "comment": P("string"),
        "vms": P("string", pattern=r"[,;\s]*[1-9]\d{2,8}(?:[,;\s]+[1-9]\d{2,8})*[,;\s]*"),
        "storage": P("string", pattern=r"[,;\s]*[a-z][a-z0-9\-_.]*[a-z0-9]"
                                       r"(?:[,;\s]+[a-z][a-z0-9\-_.]*[a-z0-9])*[,;\s]*"),
        "delete": P("boolean"),
        "allow-move": P("boolean"),
    },
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

_FW = "/nodes/{node}/qemu/{vmid}/firewall"
_FW_DIGEST = P("string", max_length=64)
_IPSET_NAME = P("string", optional=False, max_length=64, pattern=r"[A-Za-z][A-Za-z0-9\-_]+")
_LOG_LEVELS = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug", "nolog")
_POLICIES = ("ACCEPT", "REJECT", "DROP")
#: a VM's firewall: options and IP sets (the ``ipfilter-net0`` anti-spoofing set)
ENDPOINTS.update({
    ("GET", f"{_FW}/options"): {"node": NODE, "vmid": VMID},
    ("PUT", f"{_FW}/options"): {
        "node": NODE, "vmid": VMID, "delete": P("string", fmt="pve-configid-list"),
        "digest": _FW_DIGEST, "dhcp": P("boolean"), "enable": P("boolean"),
        "ipfilter": P("boolean"), "macfilter": P("boolean"), "ndp": P("boolean"),
        "radv": P("boolean"), "log_level_in": P("string", enum=_LOG_LEVELS),
        "log_level_out": P("string", enum=_LOG_LEVELS),
        "policy_in": P("string", enum=_POLICIES), "policy_out": P("string", enum=_POLICIES),
    },
    ("GET", f"{_FW}/ipset"): {"node": NODE, "vmid": VMID},
    ("POST", f"{_FW}/ipset"): {
        "node": NODE, "vmid": VMID, "name": _IPSET_NAME, "comment": P("string"),
        "digest": _FW_DIGEST,
        "rename": P("string", max_length=64, pattern=r"[A-Za-z][A-Za-z0-9\-_]+"),
    },
    ("GET", f"{_FW}/ipset/{{name}}"): {"node": NODE, "vmid": VMID, "name": _IPSET_NAME},
    ("POST", f"{_FW}/ipset/{{name}}"): {
        "node": NODE, "vmid": VMID, "name": _IPSET_NAME,
        "cidr": P("string", optional=False), "comment": P("string"), "nomatch": P("boolean"),
    },
    ("DELETE", f"{_FW}/ipset/{{name}}"): {
        "node": NODE, "vmid": VMID, "name": _IPSET_NAME, "force": P("boolean"),
    },
    ("DELETE", f"{_FW}/ipset/{{name}}/{{cidr}}"): {
        "node": NODE, "vmid": VMID, "name": _IPSET_NAME, "cidr": P("string", optional=False),
        "digest": _FW_DIGEST,
    },
})
