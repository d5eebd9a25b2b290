"""What a rendered VM keeps from its *source*: the template it is cloned from, or the VM itself
when it already exists (adoption with ``vm export-tf``, a re-render after a crash).

On clone, bpg/proxmox 0.111.1 writes whole blocks - ``cpu``, ``memory``, the boot disk, ``net0``
and the cloud-init drive - and fills every attribute the file leaves out with its own default
(``cpu.type = "qemu64"``, ``memory.floating = 0``, ``disk.datastore_id = "local-lvm"``, ...).
So the renderer states each of them, read here from the source's PVE config.

A PVE option the source leaves unset is rendered the way PVE means it (``kvm64``, balloon =
memory) when the provider writes the block anyway (a clone, a resize), and the way the provider
reads it back (``qemu64``, ``0``) when the block matches the live VM: adopting a VM then plans
no change to it, and so no reboot.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

_SIZE_RE = re.compile(r"(?:^|,)size=(\d+(?:\.\d+)?)([KMGT]?)(?:,|$)")
_TO_GIB = {"K": 1 / 1024**2, "M": 1 / 1024, "G": 1, "T": 1024, "": 1 / 1024**3}
_CLOUDINIT_SLOT = re.compile(r"^(ide[0-3]|sata[0-5]|scsi([0-9]|[12][0-9]|30))$")
_CLOUDINIT_VOLUME = re.compile(r"^([^:]+):(\d+/)?vm-\d+-cloudinit(\.\w+)?$")
_NIC_MODELS = ("e1000", "e1000e", "rtl8139", "virtio", "vmxnet3")  # what the provider accepts
_TRUE = ("1", "on", "yes", "true")
#: PVE's own default CPU model (qm.conf ``cputype``), meant when ``cpu`` is unset.
PVE_DEFAULT_CPU_TYPE = "kvm64"
#: What bpg/proxmox reads back for an unset ``cpu`` (vm.go, vmReadCustom).
PROVIDER_READ_CPU_TYPE = "qemu64"
#: Boot-disk options the provider writes on clone: PVE option -> (attribute, kind).
_DISK_OPTIONS = {"aio": ("aio", str), "backup": ("backup", bool), "cache": ("cache", str),
                 "discard": ("discard", str), "iothread": ("iothread", bool),
                 "replicate": ("replicate", bool), "ssd": ("ssd", bool),
                 "serial": ("serial", str)}

Config = Mapping[str, object]


def disk_gb(value: str) -> int | None:
    """Size in GiB (rounded up) from a PVE disk option string like ``local:1/x.raw,size=8G``."""
    m = _SIZE_RE.search(value)
    if not m:
        return None
    gib = float(m.group(1)) * _TO_GIB[m.group(2)]
    return max(1, int(-(-gib // 1)))


def property_string(value: object) -> tuple[str, dict[str, str]]:
    """PVE's ``head,key=value,...``: the head (a part without ``=``, else "") and the pairs."""
    head, pairs = "", {}
    for part in str(value or "").split(","):
        key, sep, val = part.strip().partition("=")
        if sep:
            pairs[key] = val
        elif key and not head:
            head = key
    return head, pairs


def _int(value: object) -> int | None:
    text = str(value) if value is not None else ""
    return int(text) if text.isdigit() else None


def _float(value: object) -> float | None:
    try:
        return float(str(value)) if value is not None else None
    except ValueError:
        return None


def _flag(value: object) -> bool:
    return str(value).strip().lower() in _TRUE


@dataclass(frozen=True)
class CpuKept:
    """The source's ``cpu`` options; None where PVE's option is unset."""

    type: str | None = None
    flags: tuple[str, ...] = ()
    sockets: int = 1
    numa: bool = False
    hotplugged: int | None = None  # vcpus
    limit: float | None = None  # cpulimit
    units: int | None = None  # cpuunits
    affinity: str | None = None


@dataclass(frozen=True)
class MemoryKept:
    """The source's memory options beyond the size; None where unset."""

    balloon: int | None = None
    hugepages: str | None = None
    keep_hugepages: bool | None = None


@dataclass(frozen=True)
class DiskKept:
    """The source's boot disk: where it lives, its size and its options as set."""

    datastore: str
    size_gb: int
    options: dict[str, str | bool] = field(default_factory=dict)


@dataclass(frozen=True)
class NicKept:
    """The source's ``net0`` options (bridge and MAC are not kept: ours / PVE's)."""

    model: str = "virtio"
    firewall: bool = False
    disconnected: bool = False
    mtu: int = 0
    queues: int = 0
    rate_limit: float = 0.0
    vlan_id: int = 0
    trunks: str | None = None


@dataclass(frozen=True)
class Inherited:
    """Everything a clone must not silently change (see the module docstring).

    ``live_cores`` / ``live_memory_mb`` are the source's own sizes when the source is the VM
    itself (None for a template): while the rendered size equals them, the provider leaves
    the block alone, so unset options are rendered as it reads them."""

    cpu: CpuKept
    memory: MemoryKept
    disk: DiskKept
    nic: NicKept = NicKept()
    cloudinit_datastore: str | None = None
    user_data_volume: str | None = None  # cicustom ``user=`` of the source
    live_cores: int | None = None
    live_memory_mb: int | None = None

    @property
    def is_live(self) -> bool:
        """The source is the VM itself, not a template."""
        return self.live_cores is not None

    def cpu_type(self, cores: int) -> str:
        """``cpu.type``: the source's, else PVE's default - or what the provider reads back
        when the cpu block of an existing VM stays as it is."""
        if self.cpu.type is not None:
            return self.cpu.type
        return PROVIDER_READ_CPU_TYPE if cores == self.live_cores else PVE_DEFAULT_CPU_TYPE

    def floating(self, dedicated: int) -> int:
        """``memory.floating`` (PVE's balloon, never above ``dedicated``); unset means
        "balloon = memory" to PVE and 0 to the provider's read."""
        if self.memory.balloon is not None:
            return min(self.memory.balloon, dedicated)
        return 0 if dedicated == self.live_memory_mb else dedicated


def _cpu(config: Config) -> CpuKept:
    head, pairs = property_string(config["cpu"]) if config.get("cpu") else ("", {})
    cpu_type = pairs.get("cputype") or head or None
    affinity = str(config["affinity"]) if config.get("affinity") else None
    return CpuKept(type=cpu_type, flags=tuple(f for f in pairs.get("flags", "").split(";") if f),
                   sockets=_int(config.get("sockets")) or 1, numa=_flag(config.get("numa")),
                   hotplugged=_int(config.get("vcpus")), limit=_float(config.get("cpulimit")),
                   units=_int(config.get("cpuunits")), affinity=affinity)


def _memory(config: Config) -> MemoryKept:
    hugepages = str(config["hugepages"]) if config.get("hugepages") else None
    keep = _flag(config["keephugepages"]) if "keephugepages" in config else None
    return MemoryKept(balloon=_int(config.get("balloon")), hugepages=hugepages,
                      keep_hugepages=keep)


def _disk(config: Config, interface: str) -> DiskKept:
    value = str(config.get(interface) or "")
    volume, pairs = property_string(value)
    size = disk_gb(value)
    if ":" not in volume or size is None:
        raise ValueError(f"the source VM has no boot disk {interface} with a datastore and a "
                         f"size (found {value!r}); set the disk interface to its boot disk")
    options: dict[str, str | bool] = {
        attr: (_flag(pairs[opt]) if kind is bool else pairs[opt])
        for opt, (attr, kind) in _DISK_OPTIONS.items() if opt in pairs}
    return DiskKept(datastore=volume.split(":", 1)[0], size_gb=size, options=options)


def _nic(config: Config) -> NicKept:
    head, pairs = property_string(config.get("net0"))
    model = next((m for m in _NIC_MODELS if head == m or pairs.get(m) is not None), "virtio")
    return NicKept(model=model, firewall=_flag(pairs.get("firewall")),
                   disconnected=_flag(pairs.get("link_down")), mtu=_int(pairs.get("mtu")) or 0,
                   queues=_int(pairs.get("queues")) or 0,
                   rate_limit=_float(pairs.get("rate")) or 0.0,
                   vlan_id=_int(pairs.get("tag")) or 0, trunks=pairs.get("trunks") or None)


def _cloudinit_datastore(config: Config) -> str | None:
    for key in sorted(config):
        head, _ = property_string(config[key])
        m = _CLOUDINIT_VOLUME.match(head) if _CLOUDINIT_SLOT.match(key) else None
        if m:
            return m.group(1)
    return None


def _user_data_volume(config: Config) -> str | None:
    _, pairs = property_string(config.get("cicustom"))
    return pairs.get("user") or None


def inherited_from(config: Config, *, disk_interface: str, live: bool) -> Inherited:
    """Read a source VM's PVE config (``GET .../qemu/{vmid}/config``). ``live``: the source
    is the VM itself (adoption, re-render), not the template it is cloned from."""
    return Inherited(
        cpu=_cpu(config), memory=_memory(config), disk=_disk(config, disk_interface),
        nic=_nic(config), cloudinit_datastore=_cloudinit_datastore(config),
        user_data_volume=_user_data_volume(config),
        live_cores=(_int(config.get("cores")) or 1) if live else None,
        live_memory_mb=_int(config.get("memory")) if live else None)
