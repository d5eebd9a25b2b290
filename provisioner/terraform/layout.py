"""The per-VM directory layout under ``proxmox.terraform_dir``.

::

    <root>/<vm name>/main.tf.json        rendered config (0600; holds cloud-init user data)
    <root>/<vm name>/terraform.tfstate   this VM's own local state (locked by terraform)
    <root>/<vm name>/.terraform/ ...     providers (init)
    <root>/.archive/<name>.<vmid>.<utc>  destroyed VMs, kept for audit, without secrets

Files are replaced atomically and only when their bytes change, so an unchanged VM leaves
its directory untouched.

An archive keeps what an operator audits and no secret: ``main.tf.json`` with every
user-data body replaced by its length and SHA-256 (the body holds the VM's own secret key),
``state-summary.json`` (each state file's resource addresses and ids, not its attributes,
which repeat the user data), and ``.terraform.lock.hcl``. Everything else is left behind.
The copy is built beside the archive and renamed into place, so a crash never leaves a
half-scrubbed archive, only a live directory that the next destroy archives again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

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
    """Archive a destroyed VM's directory to ``<root>/.archive``, scrubbed (so the name can be
    reused); returns the archive's path, or None if there was nothing to archive."""
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
    _replace_scrubbed(directory, target)
    shutil.rmtree(directory)
    return target


def scrub_archives(root: Path) -> list[Path]:
    """Scrub archives written before archives were scrubbed (or by hand); returns them."""
    done: list[Path] = []
    base = Path(root) / ARCHIVE
    if not base.is_dir():
        return done
    for entry in sorted(base.iterdir()):
        if entry.name.startswith(_PARTIAL):
            shutil.rmtree(entry, ignore_errors=True)  # a crash mid-archive: only scrubbed data
        elif entry.is_dir() and not _is_scrubbed(entry):
            old = entry.with_name(f"{_PARTIAL}old-{entry.name}")
            os.replace(entry, old)
            _replace_scrubbed(old, entry)
            shutil.rmtree(old)
            done.append(entry)
    return done


_PARTIAL = ".partial-"
SUMMARY_FILE = "state-summary.json"
_KEPT = (MAIN_FILE, SUMMARY_FILE, ".terraform.lock.hcl")
_SCRUBBED = "<scrubbed user data:"


def _is_scrubbed(directory: Path) -> bool:
    names = {p.name for p in directory.iterdir()}
    if not names <= set(_KEPT):
        return False
    main = directory / MAIN_FILE
    return not main.exists() or _scrub_main(main.read_bytes()) == main.read_bytes()


def _replace_scrubbed(source: Path, target: Path) -> None:
    """Build the scrubbed copy of ``source`` beside ``target``, then rename it into place."""
    partial = target.with_name(_PARTIAL + target.name)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(mode=0o700)
    main = source / MAIN_FILE
    if main.is_file():
        write_atomic(partial / MAIN_FILE, _scrub_main(main.read_bytes()), mode=0o600)
    lock = source / ".terraform.lock.hcl"
    if lock.is_file():
        write_atomic(partial / lock.name, lock.read_bytes(), mode=0o600)
    summary = state_summary(source)
    if summary:
        data = (json.dumps(summary, sort_keys=True, indent=2) + "\n").encode()
        write_atomic(partial / SUMMARY_FILE, data, mode=0o600)
    os.replace(partial, target)


def _scrub_main(data: bytes) -> bytes:
    """``main.tf.json`` with each ``source_raw.data`` (user data) replaced by its digest."""
    try:
        doc = json.loads(data)
    except ValueError:
        return b'{"//": "main.tf.json was unreadable and is not archived"}\n'
    return (json.dumps(_scrub_value(doc), sort_keys=True, indent=2, ensure_ascii=False)
            + "\n").encode("utf-8")


def _scrub_value(value: Any) -> Any:
    if isinstance(value, dict):
        out = {k: _scrub_value(v) for k, v in value.items()}
        raw = out.get("source_raw")
        if isinstance(raw, dict) and isinstance(raw.get("data"), str) \
                and not raw["data"].startswith(_SCRUBBED):
            body = raw["data"].encode("utf-8")
            raw["data"] = (f"{_SCRUBBED} {len(body)} bytes, sha256 "
                           f"{hashlib.sha256(body).hexdigest()}")
        return out
    if isinstance(value, list):
        return [_scrub_value(v) for v in value]
    return value



def state_summary(directory: Path) -> dict[str, Any]:
    """Per state file (``terraform.tfstate*``): serial, lineage and each managed resource's
    address and id; the attributes (user data, secrets) are left out."""
    out: dict[str, Any] = {}
    for path in sorted(directory.glob("terraform.tfstate*")):
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            out[path.name] = "unreadable"
            continue
        resources = [{"address": f"{r.get('type')}.{r.get('name')}",
                      "ids": [str((i.get("attributes") or {}).get("id"))
                              for i in r.get("instances") or []]}
                     for r in state.get("resources") or [] if r.get("mode") == "managed"]
        out[path.name] = {"serial": state.get("serial"), "lineage": state.get("lineage"),
                          "resources": resources}
    return out
