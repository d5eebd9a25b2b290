"""``blockhost template build``: the cloud-init template VM, created idempotently.

Steps (each one checked against what Proxmox already has, so a rerun - or a run after a crash -
only does what is missing, and a second run after success does nothing):

1. create the VM with ``POST /nodes/{node}/qemu``: the cloud image imported as ``scsi0``
   (``<storage>:0,import-from=<image>``), a cloud-init drive, a serial console, the guest agent
   and the ownership marker ``managed-by=<tag>;role=template`` in the description;
2. convert it with ``POST /nodes/{node}/qemu/{vmid}/template``.

A VMID that is held by anything else (a VM without our marker, or one the token cannot see) is
refused, never modified. An existing template (ours or hand-made) counts as done.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import structlog
from structlog.typing import FilteringBoundLogger

from provisioner.backend import NAME_RE, TAG_RE
from provisioner.errors import Locked, NotFound, VmidTaken
from provisioner.proxmox.client import Param, PveClient

log = structlog.get_logger(__name__)

_STORAGE_RE = re.compile(r"^[a-z][a-z0-9\-_.]*[a-z0-9]$")
#: ``<storage>:import/<file>`` (PVE 8.2+ import content) or an absolute path (root tokens only)
_IMAGE_RE = re.compile(r"^(?:[a-z][a-z0-9\-_.]*[a-z0-9]:import/[A-Za-z0-9][A-Za-z0-9._+\-]*"
                       r"|/[A-Za-z0-9._+\-/]+)\.(?:qcow2|raw|img|vmdk)$")
_BRIDGE_RE = re.compile(r"^[-_.\w]+$")


@dataclass(frozen=True)
class TemplateSpec:
    """What the template VM should look like."""

    vmid: int
    node: str
    image: str
    storage: str = "local-lvm"
    cloudinit_storage: str | None = None  # default: ``storage``
    name: str = "blockhost-template"
    bridge: str = "vmbr0"
    cores: int = 2
    memory_mb: int = 2048
    pool: str | None = None
    tag: str = "blockhost"

    def validate(self) -> None:
        if not 100 <= self.vmid <= 999_999_999:
            raise ValueError(f"template VMID out of range (100-999999999): {self.vmid}")
        if not NAME_RE.match(self.node) or not NAME_RE.match(self.name):
            raise ValueError(f"node and name must be DNS names: {self.node!r}, {self.name!r}")
        if not _IMAGE_RE.match(self.image) or "/../" in self.image:
            raise ValueError(f"cloud image must be STORAGE:import/FILE.(qcow2|raw|img|vmdk) "
                             f"or an absolute path: {self.image!r}")
        for sid in (self.storage, self.cloudinit_storage or self.storage):
            if not _STORAGE_RE.match(sid):
                raise ValueError(f"not a storage id: {sid!r}")
        if not _BRIDGE_RE.match(self.bridge):
            raise ValueError(f"not a bridge name: {self.bridge!r}")
        if not TAG_RE.match(self.tag):
            raise ValueError(f"not a tag: {self.tag!r}")
        if self.cores < 1 or self.memory_mb < 64:
            raise ValueError("cores >= 1 and memory_mb >= 64 are required")


@dataclass(frozen=True)
class TemplateResult:
    """``action``: ``exists`` (nothing done), ``created`` or ``converted`` (resumed)."""

    vmid: int
    node: str
    action: str
    steps: tuple[str, ...] = field(default_factory=tuple)


def template_marker(tag: str) -> str:
    return f"managed-by={tag};role=template"


def _is_ours(config: Mapping[str, object], tag: str) -> bool:
    first = str(config.get("description") or "").lstrip("\ufeff").split("\n", 1)[0].strip()
    return first == template_marker(tag)


def create_params(spec: TemplateSpec) -> dict[str, Param]:
    """The ``POST /nodes/{node}/qemu`` parameters (every value a validated plain string)."""
    params: dict[str, Param] = {
        "vmid": spec.vmid,
        "name": spec.name,
        "description": f"{template_marker(spec.tag)}\nsource image: {spec.image}",
        "tags": spec.tag,
        "ostype": "l26",
        "cores": spec.cores,
        "sockets": 1,
        "memory": str(spec.memory_mb),
        "scsihw": "virtio-scsi-pci",
        "scsi0": f"{spec.storage}:0,import-from={spec.image}",
        "ide2": f"{spec.cloudinit_storage or spec.storage}:cloudinit",
        "boot": "order=scsi0",
        "serial0": "socket",
        "vga": "serial0",
        "agent": "1",
        "net0": f"virtio,bridge={spec.bridge}",
        "ipconfig0": "ip=dhcp",
    }
    if spec.pool:
        params["pool"] = spec.pool
    return params


#: A VM as found: its node and config.
_Found = tuple[str, dict[str, object]]


def _find(client: PveClient, vmid: int) -> _Found | None:
    for entry in client.resources("vm"):
        if entry.get("type") == "qemu" and int(entry.get("vmid", -1)) == vmid:
            node = str(entry["node"])
            try:
                config = client.get_object(f"nodes/{node}/qemu/{vmid}/config")
            except NotFound:
                return None
            return node, config
    return None


def _wait_unlocked(client: PveClient, vmid: int, timeout: float) -> _Found | None:
    """A ``lock: create`` means a create task (maybe of a crashed earlier run) is running:
    wait for it to end (it either finishes the VM or removes it)."""
    deadline = time.monotonic() + timeout
    while True:
        found = _find(client, vmid)
        if found is None or not found[1].get("lock"):
            return found
        if time.monotonic() >= deadline:
            raise Locked(0, f"VM {vmid} is still locked ({found[1]['lock']}) after "
                            f"{timeout:g}s; if no task is running, an operator must clear "
                            f"the stale lock (qm unlock {vmid})")
        time.sleep(client.poll_interval)


def _create(client: PveClient, spec: TemplateSpec, blog: FilteringBoundLogger) -> _Found:
    """Create the VM (the id must be free) and find it again."""
    if not client.vmid_is_free(spec.vmid):
        raise VmidTaken(0, f"VMID {spec.vmid} is used by a VM this token cannot see; "
                           "choose another proxmox.template_vmid")
    upid = client.task("POST", f"nodes/{spec.node}/qemu", **create_params(spec))
    blog.info("template.create.started", upid=upid, image=spec.image)
    client.wait_task(upid)
    found = _find(client, spec.vmid)
    if found is None:
        raise NotFound(0, f"template VM {spec.vmid} was created but is not visible to "
                          "this token")
    return found


def _convert(client: PveClient, spec: TemplateSpec, found: _Found) -> None:
    """Turn our stopped VM into the template (refuse anything not made by us)."""
    node, config = found
    if not _is_ours(config, spec.tag):
        raise VmidTaken(0, f"VMID {spec.vmid} holds VM {config.get('name')!r} that was not "
                           "made by `blockhost template build`; refusing to convert it - choose "
                           "another proxmox.template_vmid")
    status = client.get_object(f"nodes/{node}/qemu/{spec.vmid}/status/current")
    if str(status.get("status")) != "stopped":
        raise Locked(0, f"template candidate VM {spec.vmid} is {status.get('status')}; "
                        "stop it first (a template must never have booted)")
    client.wait_task(client.task("POST", f"nodes/{node}/qemu/{spec.vmid}/template"))


def build_template(client: PveClient, spec: TemplateSpec) -> TemplateResult:
    """Create and convert the template VM unless it already exists; see the module doc."""
    spec.validate()
    blog = log.bind(vmid=spec.vmid, node=spec.node)
    found = _wait_unlocked(client, spec.vmid, client.task_timeout)
    if found is not None and found[1].get("template"):
        node, config = found
        if not _is_ours(config, spec.tag):
            blog.info("template.exists_foreign", name=config.get("name"))
        else:
            blog.info("template.exists")
        return TemplateResult(spec.vmid, node, "exists")
    steps: list[str] = []
    if found is None:
        found = _create(client, spec, blog)
        steps.append("created")
    _convert(client, spec, found)
    steps.append("converted")
    blog.info("template.done", steps=steps)
    return TemplateResult(spec.vmid, found[0], "created" if "created" in steps else "converted",
                          tuple(steps))
