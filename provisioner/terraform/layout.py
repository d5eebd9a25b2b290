"""The per-VM directory layout under ``proxmox.terraform_dir``.

::

    <root>/<vm name>/main.tf.json        rendered config (0600; holds cloud-init user data)
    <root>/<vm name>/terraform.tfstate   this VM's own local state (locked by terraform)
    <root>/<vm name>/.terraform/ ...     providers (init)
    <root>/.archive/<name>.<vmid>.<utc>  directories of destroyed VMs, kept for audit

Files are replaced atomically and only when their bytes change, so an unchanged VM leaves
its directory untouched.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from provisioner.backend import NAME_RE
from provisioner.storage.atomic_file import write_atomic
from provisioner.terraform.render import MAIN_FILE

ARCHIVE = ".archive"


def vm_dir(root: Path, name: str) -> Path:
    """The directory of VM ``name`` (validated: it becomes a path component)."""
    if not NAME_RE.fullmatch(name or "") or name.startswith("."):
        raise ValueError(f"VM name is not a valid DNS name: {name!r}")
    return Path(root) / name


def write_if_changed(path: Path, data: bytes) -> bool:
    """Atomically replace ``path`` with ``data`` (mode 0600) unless it already holds exactly
    these bytes; returns True if the file was written."""
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, data, mode=0o600)
    return True


def write_main(directory: Path, data: bytes) -> bool:
    """Write ``main.tf.json`` in a VM directory (see :func:`write_if_changed`)."""
    return write_if_changed(directory / MAIN_FILE, data)


def archive(directory: Path, vmid: int) -> Path | None:
    """Move a destroyed VM's directory to ``<root>/.archive`` (so the name can be reused);
    returns the new path, or None if there was nothing to move."""
    if not directory.exists():
        return None
    target_root = directory.parent / ARCHIVE
    target_root.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = target_root / f"{directory.name}.{vmid}.{stamp}"
    n = 1
    while target.exists():
        n += 1
        target = target_root / f"{directory.name}.{vmid}.{stamp}.{n}"
    os.replace(directory, target)
    return target
