"""At daemon start on a cluster: place VMs only where their user-data snippet can be read.

User-data goes to the local ``proxmox.snippets_dir`` and is referenced as
``<proxmox.cloudinit_storage>:snippets/...``; a VM placed on a node that cannot read that
storage's copy does not boot. When placement may use more than one node, PVE is asked which
of them can read it (:mod:`provisioner.proxmox.snippet_nodes`): all of them (a shared storage
with ``snippets`` content) changes nothing; some of them limits placement to those, said in one
log line; none refuses to start with one line saying what to do.
"""

from __future__ import annotations

import structlog

from listener.config import Config
from listener.errors import UserError
from listener.runtime.wiring import build_api_backend
from provisioner.errors import PveError
from provisioner.proxmox.snippet_nodes import SnippetReach, read_snippet_reach

log = structlog.get_logger(__name__)


def limit_placement_to_snippet_readers(config: Config, *,
                                       local_node: str | None = None) -> Config:
    """``config`` with ``proxmox.nodes`` narrowed to the nodes that can read the snippets (the
    same config when all can, or when nothing is written: no ``snippets_dir``, or the
    Terraform backend, which uploads each snippet to its VM's own node). ``local_node`` is
    this host's node name (default: its short host name)."""
    px = config.proxmox
    if px.backend != "api" or px.snippets_dir is None:
        return config
    reach = _read_reach(config, local_node)
    if reach is None or reach.everywhere:
        return config
    if not reach.readable:
        raise UserError(_unreadable(reach))
    log.warning("placement.limited_to_snippet_readers", nodes=list(reach.readable),
                left_out=[n for n in reach.candidates if n not in reach.readable],
                storage=reach.storage, reason="the snippet storage is not shared; see README "
                "'Operating it' to share it")
    return config.model_copy(update={"proxmox": px.model_copy(
        update={"nodes": list(reach.readable)})})


def _read_reach(config: Config, local_node: str | None) -> SnippetReach | None:
    """What PVE says; a PVE that does not answer now is not checked (logged): the daemon
    still starts, to follow the chain."""
    px = config.proxmox
    try:
        return read_snippet_reach(build_api_backend(config), storage=px.cloudinit_storage,
                                  allowed=px.nodes, local_node=local_node)
    except PveError as exc:
        log.warning("placement.snippets_unchecked", storage=px.cloudinit_storage,
                    error=str(exc)[:200])
        return None


def _unreadable(reach: SnippetReach) -> str:
    nodes = ", ".join(reach.candidates)
    if not reach.listed:
        return (f"PVE lists no storage '{reach.storage}' (proxmox.cloudinit_storage) on the "
                f"nodes placement may use ({nodes}), so none can read the user-data snippets; "
                "fix the name, or give the token Datastore.Audit on /storage/"
                f"{reach.storage}")
    return (f"no node placement may use ({nodes}) can read the user-data snippets: storage "
            f"'{reach.storage}' (proxmox.cloudinit_storage) is not shared with 'snippets' "
            f"content and this host ({reach.local_node}) is none of them; share it (README "
            "'Operating it') or run the listener on a node that has it")
