"""Write the Terraform directory for a VM that already exists, so an operator can adopt it.

The VM must carry all our ownership markers. Sizes (cores, memory, boot disk) and power
state are read from the live VM so that adopting it does not change it; the document gets an
``import`` block (``<node>/<vmid>``), and ``clone`` is in ``ignore_changes``, so the first
``terraform apply`` imports the VM instead of cloning or re-creating it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TypedDict

import structlog

from provisioner.backend import VMRef, VMSpec
from provisioner.errors import NotFound, PveError
from provisioner.terraform.backend import TerraformBackend
from provisioner.terraform.render import VM_ADDRESS
from provisioner.terraform.runner import state_addresses

log = structlog.get_logger(__name__)

_SIZE_RE = re.compile(r"(?:^|,)size=(\d+(?:\.\d+)?)([KMGT]?)(?:,|$)")
_TO_GIB = {"K": 1 / 1024**2, "M": 1 / 1024, "G": 1, "T": 1024, "": 1 / 1024**3}


def disk_gb(value: str) -> int | None:
    """Size in GiB (rounded up) from a PVE disk option string like ``local:1/x.raw,size=8G``."""
    m = _SIZE_RE.search(value)
    if not m:
        return None
    gib = float(m.group(1)) * _TO_GIB[m.group(2)]
    return max(1, int(-(-gib // 1)))


class LiveSizes(TypedDict, total=False):
    """The sizes a live VM config states (only the keys present)."""

    cores: int
    memory_mb: int
    disk_gb: int


def live_sizes(config: Mapping[str, object], disk_interface: str) -> LiveSizes:
    """cores / memory_mb / disk_gb found in a VM config (only the keys present)."""
    out: LiveSizes = {}
    if str(config.get("cores", "")).isdigit():
        out["cores"] = int(str(config["cores"]))
    if str(config.get("memory", "")).isdigit():
        out["memory_mb"] = int(str(config["memory"]))
    size = disk_gb(str(config.get(disk_interface) or ""))
    if size is not None:
        out["disk_gb"] = size
    return out


def export_vm(backend: TerraformBackend, spec: VMSpec, ref: VMRef, *,
              out_dir: Path | None = None) -> Path:
    """Verify ``ref`` is ours, then write its directory (default: the backend's directory for
    the VM); returns the directory. ``spec`` supplies what PVE does not store (subscription,
    addresses, user data); sizes and power state come from the live VM."""
    vm = backend.api.status(ref)
    if vm is None:
        raise NotFound(0, f"VM {ref.vmid} ({ref.name}) does not exist or is not visible to "
                          f"token {backend.api.token_id}")
    backend.check_owned(vm, ref, "export")
    # a read-only GET through the API backend (same token, TLS settings and error mapping)
    config = backend.api.get_object(f"nodes/{vm.node}/qemu/{vm.vmid}/config")
    spec = dataclasses.replace(spec, node=vm.node,
                               **live_sizes(config, backend.settings.disk_interface))
    try:
        template_node: str | None = backend.template_node(spec)
    except PveError:
        template_node = None  # clone is ignored after import; the template may be gone
    directory = Path(out_dir) if out_dir is not None else backend.directory(spec.name)
    adopt = VM_ADDRESS not in state_addresses(directory)
    doc = backend.render(spec, adopt=adopt, started=vm.power == "running",
                         template_node=template_node)
    backend.write(directory, doc)
    log.info("tf.export.done", vmid=vm.vmid, dir=str(directory), adopt=adopt)
    return directory


def read_local_snippet(snippets_dir: Path | None, name: str) -> str | None:
    """The user-data snippet the API backend wrote for ``name`` (``<dir>/snippets/
    <name>-user.yaml``), or None when there is none on this host."""
    if snippets_dir is None:
        return None
    path = Path(snippets_dir) / "snippets" / f"{name}-user.yaml"
    try:
        return path.read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return None
