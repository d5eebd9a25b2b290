"""Which nodes can read the user-data snippets this host writes (issue 13 item 11): pure over
``/cluster/resources`` entries, and read from the PVE simulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from provisioner.proxmox.snippet_nodes import (
    placement_candidates,
    read_snippet_reach,
    snippet_reach,
)
from provisioner.pvesim.launcher import PveSim
from tests.support.pve import api_backend, start_sim

NODES = ("pve1", "pve2", "pve3")


def storage(node: str, sid: str = "snip", *, shared: Any = 0,
            content: str = "snippets,iso") -> dict[str, Any]:
    return {"type": "storage", "node": node, "storage": sid, "shared": shared,
            "content": content}


@pytest.mark.parametrize(("entries", "local", "readable"), [
    ([storage(n, shared=1) for n in NODES], "elsewhere", NODES),  # shared: everyone
    ([storage(n, shared="1") for n in NODES[:2]], "elsewhere", NODES[:2]),  # not on pve3
    ([storage(n) for n in NODES], "pve2", ("pve2",)),  # local: only this host
    ([storage(n) for n in NODES], "elsewhere", ()),  # local, and this host is no node
    ([storage(n, shared=1, content="iso,images") for n in NODES], "pve1", ()),  # no snippets
    ([storage(n, "other", shared=1) for n in NODES], "pve1", ()),  # another storage
])
def test_snippet_reach(entries: list[dict[str, Any]], local: str,
                       readable: tuple[str, ...]) -> None:
    reach = snippet_reach(entries, storage="snip", candidates=NODES, local_node=local)
    assert reach.readable == readable and reach.everywhere == (readable == NODES)
    assert reach.listed == any(e["storage"] == "snip" for e in entries)


def test_candidates_are_every_node_or_the_configured_ones() -> None:
    entries = [{"type": "node", "node": n, "status": "offline" if n == "pve3" else "online"}
               for n in NODES] + [storage("pve1")]
    assert placement_candidates(entries, []) == NODES  # an offline node may come back
    assert placement_candidates(entries, ["pve3", "pve1", "gone"]) == ("pve1", "pve3")


def test_two_nodes_and_a_storage_that_is_not_shared(pvesim: PveSim) -> None:
    """The simulator's 'local' is per node: only the node this host is can read it."""
    backend = api_backend(pvesim)
    reach = read_snippet_reach(backend, storage="local", allowed=[], local_node="pve1")
    assert reach is not None and reach.candidates == ("pve1", "pve2")
    assert reach.readable == ("pve1",)
    nowhere = read_snippet_reach(backend, storage="local", allowed=[], local_node="elsewhere")
    assert nowhere is not None and nowhere.readable == ()
    # one node to place on: nothing to check
    assert read_snippet_reach(backend, storage="local", allowed=["pve2"]) is None


def test_a_simulator_sharing_its_snippets_directory_reports_it_shared(tmp_path: Path) -> None:
    sim = start_sim(tmp_path, pool_scoped=False, snippets=True, nodes=("pve1", "pve2"))
    try:
        reach = read_snippet_reach(api_backend(sim), storage="local", allowed=[],
                                   local_node="elsewhere")
        assert reach is not None and reach.everywhere
    finally:
        sim.stop()
