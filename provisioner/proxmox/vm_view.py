"""What the API token sees of one VM, and how it is looked up.

``GET /cluster/resources?type=vm`` lists exactly the VMs the token may audit (with a
pool-scoped token: the pool's members and the template), so a VM missing there is either gone
or not ours; its node is taken from that listing, never from the caller.
"""

from __future__ import annotations

import contextlib
import ipaddress
from dataclasses import dataclass, field

from provisioner.backend import VMStatus, deployment_tag
from provisioner.errors import NotFound
from provisioner.inventory import Occupied
from provisioner.proxmox.client import ClusterResource, PveClient
from provisioner.proxmox.encoders import split_tags


@dataclass
class VMView:
    """What one inspection saw: the /cluster/resources entry plus the config."""

    vmid: int
    node: str
    entry: ClusterResource
    config: dict[str, object] = field(default_factory=dict)

    def text(self, key: str) -> str | None:
        """A config value as text; None when unset or empty."""
        value = self.config.get(key)
        return str(value) if value else None

    @property
    def name(self) -> str:
        return str(self.config.get("name") or self.entry.get("name") or "")

    @property
    def tags(self) -> tuple[str, ...]:
        return split_tags(str(self.config.get("tags") or self.entry.get("tags") or ""))

    @property
    def pool(self) -> str | None:
        return self.entry.get("pool") or None

    @property
    def lock(self) -> str | None:
        return self.text("lock") or self.entry.get("lock") or None

    @property
    def description(self) -> str:
        return str(self.config.get("description") or "")

    @property
    def smbios_uuid(self) -> str | None:
        for part in str(self.config.get("smbios1") or "").split(","):
            if part.startswith("uuid="):
                return part[5:]
        return None

    @property
    def digest(self) -> str | None:
        return self.text("digest")

    @property
    def is_template(self) -> bool:
        return bool(self.entry.get("template") or self.config.get("template"))

    def to_status(self, power: str) -> VMStatus:
        return VMStatus(vmid=self.vmid, node=self.node, name=self.name, power=power,
                        lock=self.lock, tags=self.tags, pool=self.pool,
                        description=self.description, smbios_uuid=self.smbios_uuid)


def find_resource(client: PveClient, vmid: int) -> ClusterResource | None:
    """The /cluster/resources entry of QEMU VM ``vmid``, None when the token cannot see it."""
    for entry in client.resources("vm"):
        if entry.get("type") == "qemu" and int(entry.get("vmid", -1)) == vmid:
            return entry
    return None


def view_of(client: PveClient, entry: ClusterResource) -> VMView | None:
    """The VM of a listed entry with its config; None when it vanished meanwhile."""
    vmid, node = int(entry["vmid"]), str(entry["node"])
    try:
        config = client.get_object(f"nodes/{node}/qemu/{vmid}/config")
    except NotFound:
        return None
    return VMView(vmid=vmid, node=node, entry=entry, config=config)


def inspect_vm(client: PveClient, vmid: int) -> VMView | None:
    """The VM as far as this token can see it, or None (absent or invisible)."""
    entry = find_resource(client, vmid)
    return None if entry is None else view_of(client, entry)


def power_of(client: PveClient, vm: VMView) -> str:
    """``running`` / ``stopped`` (``unknown`` when PVE does not say)."""
    data = client.get_object(f"nodes/{vm.node}/qemu/{vm.vmid}/status/current")
    return str(data.get("status") or "unknown")


def _addresses(config: dict[str, object]) -> tuple[set[str], set[str]]:
    """The static IPv4 / IPv6 addresses of a VM's ``ipconfigN`` entries (dhcp/auto skipped)."""
    v4: set[str] = set()
    v6: set[str] = set()
    for key, value in config.items():
        if not key.startswith("ipconfig"):
            continue
        for part in str(value).split(","):
            name, _, text = part.partition("=")
            if name not in ("ip", "ip6"):
                continue
            with contextlib.suppress(ValueError):
                address = ipaddress.ip_interface(text.strip()).ip
                (v4 if address.version == 4 else v6).add(str(address))
    return v4, v6


def occupied_by_others(client: PveClient, *, tag: str, deployment: str | None) -> Occupied:
    """Every VMID the token sees, and the static addresses of the VMs that do not carry our
    deployment tag: what the allocator must never hand out even though our inventory does
    not hold it (another deployment's VMs share the pool, the range and the subnet)."""
    ours = deployment_tag(tag, deployment) if deployment is not None else None
    vmids: set[int] = set()
    v4: set[str] = set()
    v6: set[str] = set()
    for entry in client.resources("vm"):
        vmids.add(int(entry.get("vmid", -1)))
        if entry.get("type") != "qemu" or (
                ours is not None and ours in split_tags(str(entry.get("tags") or ""))):
            continue  # our own VMs' addresses are leased in our inventory already
        vm = view_of(client, entry)
        if vm is not None:
            found4, found6 = _addresses(vm.config)
            v4 |= found4
            v6 |= found6
    return Occupied(vmids=frozenset(vmids), ipv4=frozenset(v4), ipv6=frozenset(v6))


def tagged_views(client: PveClient, tag: str) -> list[VMView]:
    """Every QEMU VM (not a template) carrying ``tag``, whatever its marker says."""
    out: list[VMView] = []
    for entry in client.resources("vm"):
        if entry.get("type") != "qemu" or entry.get("template"):
            continue
        if tag in split_tags(str(entry.get("tags") or "")):
            vm = view_of(client, entry)
            if vm is not None:
                out.append(vm)
    return sorted(out, key=lambda vm: vm.vmid)
