"""Placement: the pure node choice, the thread-safe limiter, and real /cluster/resources data."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provisioner.placement import (
    MIB,
    PlacementError,
    PlacementLimiter,
    PlacementLimits,
    choose_node,
    online_nodes,
)
from tests.support.pve import api_backend, start_sim

GIB = 1024**3


def node(name: str, free_gib: float, *, maxmem_gib: int = 64, maxcpu: int = 16,
         cpu: float = 0.1, status: str = "online") -> dict[str, Any]:
    return {"id": f"node/{name}", "type": "node", "node": name, "status": status,
            "maxmem": maxmem_gib * GIB, "mem": int(maxmem_gib * GIB - free_gib * GIB),
            "maxcpu": maxcpu, "cpu": cpu}


LIMITS = PlacementLimits(per_node=2, total=5)


def test_most_free_memory_wins_and_other_entry_types_are_ignored() -> None:
    res = [node("a", 10), node("b", 30), node("c", 20),
           {"type": "qemu", "node": "a", "vmid": 100, "status": "running"},
           {"type": "storage", "node": "b", "status": "available"}]
    assert choose_node(res, None, {}, LIMITS) == "b"


def test_offline_nodes_are_never_chosen() -> None:
    res = [node("a", 10), node("b", 50, status="offline"), node("c", 5, status="unknown")]
    assert choose_node(res, None, {}, LIMITS) == "a"
    assert [n.name for n in online_nodes(res)] == ["a"]


def test_restricted_to_the_allowed_list() -> None:
    res = [node("a", 10), node("b", 30), node("c", 20)]
    assert choose_node(res, ["a", "c"], {}, LIMITS) == "c"
    assert choose_node(res, [], {}, LIMITS) == "b"  # empty list = all nodes


def test_allowed_list_matching_no_online_node_is_an_error() -> None:
    res = [node("a", 10), node("b", 30, status="offline")]
    with pytest.raises(PlacementError, match=r"proxmox.nodes"):
        choose_node(res, ["b", "zzz"], {}, LIMITS)
    with pytest.raises(PlacementError, match="no online node"):
        choose_node([node("a", 1, status="offline")], None, {}, LIMITS)


def test_a_vm_that_fits_nowhere_is_an_error_not_a_wait() -> None:
    res = [node("a", 1), node("b", 2, maxcpu=2)]
    with pytest.raises(PlacementError, match="4096 MiB"):
        choose_node(res, None, {}, LIMITS, memory_mb=4096)
    with pytest.raises(PlacementError):
        choose_node(res, None, {}, LIMITS, memory_mb=512, cores=64)


def test_per_node_limit_moves_work_to_the_next_node() -> None:
    res = [node("a", 10), node("b", 30)]
    assert choose_node(res, None, {"b": 1}, LIMITS) == "b"
    assert choose_node(res, None, {"b": 2}, LIMITS) == "a"
    assert choose_node(res, None, {"b": 2, "a": 2}, LIMITS) is None


def test_global_limit_returns_none_even_with_free_nodes() -> None:
    res = [node(n, 30) for n in "abcdef"]
    assert choose_node(res, None, {"a": 2, "b": 2, "c": 1}, LIMITS) is None
    assert choose_node(res, None, {"a": 2, "b": 2}, LIMITS) == "c"


def test_in_flight_creates_count_against_free_memory() -> None:
    res = [node("a", 20), node("b", 16)]
    assert choose_node(res, None, {}, LIMITS, memory_mb=4096) == "a"
    # one 4 GiB create in flight on a: 16 GiB left there vs 16 on b -> tie -> CPU -> name
    assert choose_node(res, None, {"a": 1}, LIMITS, memory_mb=4096) == "a"
    res = [node("a", 20, cpu=0.9), node("b", 16, cpu=0.1)]
    assert choose_node(res, None, {"a": 1}, LIMITS, memory_mb=4096) == "b"
    # a node whose remaining memory is eaten by in-flight creates is skipped
    res = [node("a", 6), node("b", 5)]
    assert choose_node(res, None, {"a": 1}, PlacementLimits(4, 8), memory_mb=4096) == "b"


def test_ties_break_by_name_and_string_numbers_are_accepted() -> None:
    res = [node("b", 8), node("a", 8)]
    assert choose_node(res, None, {}, LIMITS) == "a"
    res = [{"type": "node", "node": "x", "status": "online", "maxmem": str(8 * GIB),
            "mem": "0", "maxcpu": "4", "cpu": "0.5"}]
    assert choose_node(res, None, {}, LIMITS, memory_mb=1024, cores=4) == "x"


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        PlacementLimits(per_node=0)
    with pytest.raises(ValueError):
        PlacementLimits(total=0)


NODES = st.lists(
    st.tuples(st.sampled_from("abcdefg"), st.integers(0, 64), st.integers(1, 32),
              st.floats(0, 1), st.booleans()),
    min_size=1, max_size=7, unique_by=lambda t: t[0])


@settings(max_examples=300, deadline=None)
@given(nodes=NODES, inflight=st.dictionaries(st.sampled_from("abcdefg"), st.integers(0, 5)),
       per_node=st.integers(1, 4), total=st.integers(1, 10), mem=st.integers(0, 8192),
       cores=st.integers(0, 8), allowed=st.lists(st.sampled_from("abcdefg"), max_size=4))
def test_choice_is_always_eligible_and_best(nodes: list[tuple[str, int, int, float, bool]],
                                            inflight: dict[str, int], per_node: int, total: int,
                                            mem: int, cores: int, allowed: list[str]) -> None:
    res = [node(n, free, maxcpu=cpus, cpu=load, status="online" if up else "offline")
           for n, free, cpus, load, up in nodes]
    limits = PlacementLimits(per_node, total)
    need = mem * MIB
    candidates = [r for r in res if r["status"] == "online" and (not allowed or r["node"] in allowed)]
    fits = [r for r in candidates if r["maxmem"] - r["mem"] >= need and r["maxcpu"] >= cores]
    try:
        choice = choose_node(res, allowed, inflight, limits, memory_mb=mem, cores=cores)
    except PlacementError:
        assert not fits
        return
    assert fits
    eligible = {r["node"]: r["maxmem"] - r["mem"] - inflight.get(r["node"], 0) * need
                for r in fits if inflight.get(r["node"], 0) < per_node
                and r["maxmem"] - r["mem"] - inflight.get(r["node"], 0) * need >= need}
    if sum(inflight.values()) >= total or not eligible:
        assert choice is None
        return
    assert choice in eligible
    assert eligible[choice] == max(eligible.values())


# ----------------------------------------------------------------------------- limiter


def test_limiter_never_exceeds_its_limits_under_threads() -> None:
    res = [node("a", 40), node("b", 40), node("c", 40)]
    limiter = PlacementLimiter(PlacementLimits(per_node=2, total=4))
    lock = threading.Lock()
    current: dict[str, int] = {}
    peak = {"total": 0, "node": 0}
    chosen: list[str] = []

    def worker() -> None:
        with limiter.slot(lambda: res, memory_mb=1024, timeout=30) as got:
            assert got is not None
            with lock:
                current[got] = current.get(got, 0) + 1
                chosen.append(got)
                peak["total"] = max(peak["total"], sum(current.values()))
                peak["node"] = max(peak["node"], current[got])
            time.sleep(0.01)
            with lock:
                current[got] -= 1

    threads = [threading.Thread(target=worker) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(chosen) == 24
    assert peak["total"] <= 4 and peak["node"] <= 2
    assert peak["total"] >= 2  # work did overlap
    assert set(chosen) == {"a", "b", "c"}
    assert limiter.inflight() == {}


def test_try_acquire_is_immediate_and_release_frees_the_slot() -> None:
    res = [node("a", 40)]
    limiter = PlacementLimiter(PlacementLimits(per_node=1, total=1))
    assert limiter.try_acquire(res) == "a"
    assert limiter.try_acquire(res) is None
    assert limiter.acquire(lambda: res, timeout=0.05) is None
    limiter.release("a")
    assert limiter.try_acquire(res) == "a"
    limiter.release("a")
    with pytest.raises(ValueError):
        limiter.release("a")


def test_acquire_wakes_up_when_a_slot_is_released() -> None:
    res = [node("a", 40)]
    limiter = PlacementLimiter(PlacementLimits(per_node=1, total=1), allowed=["a"])
    assert limiter.try_acquire(res) == "a"
    got: list[str | None] = []
    waiter = threading.Thread(target=lambda: got.append(limiter.acquire(lambda: res,
                                                                         timeout=30)))
    waiter.start()
    time.sleep(0.05)
    assert got == []
    limiter.release("a")
    waiter.join(10)
    assert got == ["a"]


def test_choice_from_the_simulator_cluster_resources(tmp_path: Path) -> None:
    sim = start_sim(tmp_path, pool_scoped=False, nodes=("pve1", "pve2", "pve3"))
    try:
        sim.set_node("pve1", maxmem=16 * GIB)
        sim.set_node("pve2", maxmem=128 * GIB)
        sim.set_node("pve3", maxmem=256 * GIB, status="offline")
        backend = api_backend(sim)
        limiter = PlacementLimiter(PlacementLimits(per_node=1, total=2))
        first = limiter.try_acquire(backend.node_resources(), memory_mb=2048)
        second = limiter.try_acquire(backend.node_resources(), memory_mb=2048)
        third = limiter.try_acquire(backend.node_resources(), memory_mb=2048)
        assert (first, second, third) == ("pve2", "pve1", None)
        with pytest.raises(PlacementError):
            choose_node(backend.node_resources(), ["pve3"], {}, LIMITS)
    finally:
        sim.stop()


def test_try_acquire_node_honours_both_limits() -> None:
    limiter = PlacementLimiter(PlacementLimits(per_node=2, total=3))
    assert limiter.try_acquire_node("a") and limiter.try_acquire_node("a")
    assert not limiter.try_acquire_node("a")  # per-node limit
    assert limiter.try_acquire_node("b")
    assert not limiter.try_acquire_node("c")  # global limit
    assert limiter.try_acquire([node("c", 40)]) is None
    limiter.release("a")
    assert limiter.try_acquire_node("c")
    assert limiter.inflight() == {"a": 1, "b": 1, "c": 1}
