"""Which cluster nodes can boot a VM with the user-data snippets this host writes.

The API backend writes each VM's user-data into ``snippets_dir`` here and points the VM at
``<storage>:snippets/<file>``; PVE reads that file on the node the VM starts on. A node can read
it when the storage has ``snippets`` content there and is shared (one content for every node
that has it), or, for a storage that is not shared, when the node is this very host (then
``snippets_dir`` is its own copy). ``/cluster/resources?type=storage`` says both, per node.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

from provisioner.proxmox.client import PveClient


@dataclass(frozen=True)
class SnippetReach:
    """The nodes placement may use, and those of them that can read the snippets."""

    storage: str
    candidates: tuple[str, ...]
    readable: tuple[str, ...]
    #: the node this host is, as PVE names it (for the messages)
    local_node: str
    #: whether PVE lists the storage on any node at all (not: a wrong name, or no audit right)
    listed: bool = True

    @property
    def everywhere(self) -> bool:
        return self.readable == self.candidates


def this_node() -> str:
    """PVE names a node after its host's short name."""
    return socket.gethostname().split(".", 1)[0]


def placement_candidates(resources: Sequence[Mapping[str, object]],
                         allowed: Sequence[str]) -> tuple[str, ...]:
    """Every node of the cluster (online or not: one may come back) that ``allowed`` (when
    non-empty, ``proxmox.nodes``) lets placement use."""
    names = {str(e.get("node")) for e in resources if e.get("type") == "node" and e.get("node")}
    return tuple(sorted(n for n in names if not allowed or n in allowed))


def snippet_reach(resources: Sequence[Mapping[str, object]], *, storage: str,
                  candidates: Sequence[str], local_node: str) -> SnippetReach:
    """Pure over ``/cluster/resources?type=storage`` entries: which ``candidates`` can read
    snippets written here to ``storage``."""
    entries = [e for e in resources if e.get("type") == "storage" and e.get("storage") == storage]
    readers = set()
    for entry in entries:
        if "snippets" not in str(entry.get("content") or "").split(","):
            continue
        node = str(entry.get("node") or "")
        if _flag(entry.get("shared")) or node == local_node:
            readers.add(node)
    return SnippetReach(storage, tuple(candidates),
                        tuple(n for n in candidates if n in readers), local_node, bool(entries))


def read_snippet_reach(client: PveClient, *, storage: str, allowed: Sequence[str],
                       local_node: str | None = None) -> SnippetReach | None:
    """What PVE says now; None when placement can use one node at most (nothing to check)."""
    candidates = placement_candidates(_entries(client, "node"), allowed)
    if len(candidates) < 2:
        return None
    return snippet_reach(_entries(client, "storage"), storage=storage, candidates=candidates,
                         local_node=local_node or this_node())


def _entries(client: PveClient, rtype: str) -> list[Mapping[str, object]]:
    return [cast("Mapping[str, object]", entry) for entry in client.resources(rtype)]


def _flag(value: object) -> bool:
    """PVE's booleans arrive as 0/1 (or as strings)."""
    return str(value).strip().lower() in ("1", "true")
