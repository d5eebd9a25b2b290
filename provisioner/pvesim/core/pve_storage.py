"""The two storages every simulated node has, and the files behind storage ``local``.

``local`` is a directory storage (snippets, imports); when the simulator runs with a snippets
directory, volumes on it must exist there, as on a real node.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from provisioner.pvesim.core.records import BootInfo, Entry
from provisioner.pvesim.errors import TaskError
from provisioner.pvesim.property_strings import FormatError, parse_cicustom
from provisioner.pvesim.sim_config import GIB

#: storages every simulated node has, and what they hold
STORAGES = {"local": "backup,import,iso,snippets,vztmpl", "local-lvm": "images,rootdir"}
#: virtual size the simulator gives an imported cloud image
IMPORTED_IMAGE_SIZE = 3584 * 1024**2
_PLUGIN_TYPES = (("local", "dir"), ("local-lvm", "lvmthin"))


def storage_resources(node_names: Iterable[str], *, shared_local: bool = False) -> list[Entry]:
    """The ``type: storage`` entries of ``/cluster/resources``. With ``shared_local`` (a
    simulator run with a snippets directory: every node reads that one directory) storage
    ``local`` is shared, as an NFS-backed one flagged ``shared`` would be."""
    return [{"id": f"storage/{name}/{sid}", "type": "storage", "node": name, "storage": sid,
             "content": STORAGES[sid], "plugintype": ptype, "status": "available",
             "shared": int(shared_local and sid == "local"), "maxdisk": 500 * GIB,
             "disk": 50 * GIB}
            for name in sorted(node_names) for sid, ptype in _PLUGIN_TYPES]


def import_size(snippets_dir: Path | None, src: str) -> int:
    """Size of the image a disk is imported from (``import-from``); TaskError when absent."""
    if src.startswith("/"):
        path = Path(src)
    else:
        storage, _, rel = src.partition(":")
        if storage not in STORAGES or "import" not in STORAGES[storage].split(","):
            raise TaskError(f"storage '{storage}' does not support content-type 'import'")
        if not rel.startswith("import/") or ".." in rel.split("/"):
            raise TaskError(f"unable to parse volume filename '{rel}'")
        if snippets_dir is None:
            return IMPORTED_IMAGE_SIZE
        path = snippets_dir / rel
    if not path.is_file():
        raise TaskError(f"volume '{src}' does not exist")
    return IMPORTED_IMAGE_SIZE


def _snippet(snippets_dir: Path, volid: str, rel: str) -> Path:
    path = snippets_dir / rel
    if not rel.startswith("snippets/") or ".." in rel.split("/") or not path.is_file():
        raise TaskError(f"volume '{volid}' does not exist")
    return path


def read_cicustom(snippets_dir: Path | None, cicustom: str, boot: BootInfo) -> None:
    """Check a VM's cicustom volumes at start; keep the user-data snippet in ``boot``."""
    try:
        parts = parse_cicustom(cicustom)
    except FormatError as exc:
        raise TaskError(str(exc)) from None
    for kind, volid in sorted(parts.items()):
        storage, _, rel = volid.partition(":")
        if storage not in ("local",):
            raise TaskError(f"storage '{storage}' does not exist")
        if snippets_dir is None:
            continue
        path = _snippet(snippets_dir, volid, rel)
        if kind == "user":
            boot["user_data"] = path.read_text(encoding="utf-8", errors="replace")[:65536]
