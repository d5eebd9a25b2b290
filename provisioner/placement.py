"""Choosing the cluster node for a new VM, and bounding how many creates run at once.

:func:`choose_node` is pure: it reads ``/cluster/resources`` entries (``type=node``), the
configured node list, the creates already in flight per node and the limits, and returns a node
or None ("every eligible node is at its limit - try again when a slot frees up"). It raises
:class:`PlacementError` only for conditions that waiting cannot fix (no eligible node, or the VM
fits on none of them).

:class:`PlacementLimiter` wraps it with the in-flight counts behind a lock, so worker threads can
``try_acquire`` (never blocks - the chain loop must never wait for Proxmox) or ``acquire``
(blocks up to a timeout, for workers), and ``release`` when their create finishes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from provisioner.errors import ProvisionerError

MIB = 1024**2


class PlacementError(ProvisionerError):
    """No node can take this VM, and waiting will not change that (check proxmox.nodes)."""

    permanent = True


@dataclass(frozen=True)
class NodeInfo:
    """One online node as /cluster/resources reports it."""

    name: str
    maxmem: int
    mem: int
    maxcpu: int
    cpu: float  # fraction of maxcpu in use, 0..1

    @property
    def free_mem(self) -> int:
        return max(0, self.maxmem - self.mem)

    @property
    def free_cpu(self) -> float:
        return max(0.0, self.maxcpu * (1.0 - min(1.0, max(0.0, self.cpu))))


@dataclass(frozen=True)
class PlacementLimits:
    """``per_node``: concurrent creates on one node; ``total``: across the cluster."""

    per_node: int = 4
    total: int = 8

    def __post_init__(self) -> None:
        if self.per_node < 1 or self.total < 1:
            raise ValueError("placement limits must be >= 1")


def _int(value: Any) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return 0


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def online_nodes(resources: Sequence[Mapping[str, Any]]) -> list[NodeInfo]:
    """The online nodes among /cluster/resources entries (other types are ignored; PVE sends
    numbers as strings sometimes, so values are coerced)."""
    out: dict[str, NodeInfo] = {}
    for entry in resources:
        if entry.get("type") != "node" or entry.get("status") != "online":
            continue
        name = str(entry.get("node") or "")
        if not name:
            continue
        out[name] = NodeInfo(name=name, maxmem=_int(entry.get("maxmem")),
                             mem=_int(entry.get("mem")), maxcpu=_int(entry.get("maxcpu")),
                             cpu=_float(entry.get("cpu")))
    return [out[k] for k in sorted(out)]


def choose_node(
    resources: Sequence[Mapping[str, Any]],
    allowed: Sequence[str] | None,
    inflight: Mapping[str, int],
    limits: PlacementLimits,
    *,
    memory_mb: int = 0,
    cores: int = 0,
) -> str | None:
    """The eligible node with the most free memory once in-flight creates are counted
    (each assumed to take ``memory_mb``), ties broken by free CPU, then by name.

    Eligible: online, in ``allowed`` (when non-empty), below ``limits.per_node`` in flight and
    able to hold ``memory_mb`` more. Returns None when the global or every per-node limit is
    reached; raises PlacementError when no online node is allowed or none could ever fit."""
    nodes = _allowed_online(resources, allowed)
    need = max(0, memory_mb) * MIB
    fitting = [n for n in nodes if n.free_mem >= need and n.maxcpu >= cores]
    if not fitting:
        raise PlacementError(f"no node can hold a VM with {memory_mb} MiB and {cores} cores "
                             "(free memory or CPU count too small)")
    if sum(max(0, v) for v in inflight.values()) >= limits.total:
        return None
    return _best(fitting, inflight, limits, need=need, cores=cores)


def _allowed_online(resources: Sequence[Mapping[str, Any]],
                    allowed: Sequence[str] | None) -> list[NodeInfo]:
    """The online nodes placement may use; PlacementError when there is none."""
    nodes = online_nodes(resources)
    if allowed:
        wanted = set(allowed)
        nodes = [n for n in nodes if n.name in wanted]
        if not nodes:
            raise PlacementError(f"no online Proxmox node among the configured nodes "
                                 f"{sorted(wanted)}; check proxmox.nodes and the cluster")
    elif not nodes:
        raise PlacementError("the cluster reports no online node")
    return nodes


def _best(fitting: list[NodeInfo], inflight: Mapping[str, int], limits: PlacementLimits, *,
          need: int, cores: int) -> str | None:
    """The node with the most room once its in-flight creates are counted, None when every
    node is at its limit."""
    ranked: list[tuple[int, float, str]] = []
    for node in fitting:
        busy = max(0, inflight.get(node.name, 0))
        if busy >= limits.per_node:
            continue
        free_after = node.free_mem - busy * need
        if free_after < need:
            continue
        # most memory, then most CPU, then the alphabetically first name
        ranked.append((-free_after, -(node.free_cpu - busy * cores), node.name))
    return min(ranked)[2] if ranked else None


class PlacementLimiter:
    """Thread-safe in-flight bookkeeping around :func:`choose_node`."""

    def __init__(self, limits: PlacementLimits, allowed: Sequence[str] | None = None) -> None:
        self.limits = limits
        self.allowed = list(allowed or [])
        self._inflight: dict[str, int] = {}
        self._released = 0  # bumped by every release, so acquire never misses a wake-up
        self._cond = threading.Condition()

    def inflight(self) -> dict[str, int]:
        with self._cond:
            return {k: v for k, v in self._inflight.items() if v}

    def try_acquire(self, resources: Sequence[Mapping[str, Any]], *, memory_mb: int = 0,
                    cores: int = 0) -> str | None:
        """Choose a node and take a slot on it, or None at once when all slots are taken."""
        with self._cond:
            node = choose_node(resources, self.allowed, self._inflight, self.limits,
                               memory_mb=memory_mb, cores=cores)
            if node is not None:
                self._inflight[node] = self._inflight.get(node, 0) + 1
            return node

    def try_acquire_node(self, node: str) -> bool:
        """Take a slot on a node chosen earlier (e.g. recorded at allocation) if both limits
        allow it; never blocks."""
        with self._cond:
            busy = self._inflight.get(node, 0)
            if busy >= self.limits.per_node or \
                    sum(self._inflight.values()) >= self.limits.total:
                return False
            self._inflight[node] = busy + 1
            return True

    def acquire(self, resources: Callable[[], Sequence[Mapping[str, Any]]], *,
                memory_mb: int = 0, cores: int = 0, timeout: float = 60.0) -> str | None:
        """Like try_acquire, waiting (up to ``timeout`` s) for a release; ``resources`` is
        called again after every wake-up so placement sees fresh numbers. None on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                seen = self._released
            node = self.try_acquire(resources(), memory_mb=memory_mb, cores=cores)
            if node is not None:
                return node
            with self._cond:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                if self._released == seen:
                    self._cond.wait(remaining)

    def release(self, node: str) -> None:
        with self._cond:
            count = self._inflight.get(node, 0)
            if count <= 0:
                raise ValueError(f"release of node {node!r} without a matching acquire")
            self._inflight[node] = count - 1
            self._released += 1
            self._cond.notify_all()

    @contextmanager
    def slot(self, resources: Callable[[], Sequence[Mapping[str, Any]]], *, memory_mb: int = 0,
             cores: int = 0, timeout: float = 60.0) -> Iterator[str | None]:
        """``with limiter.slot(get_resources) as node:`` - released on exit (None: timed out)."""
        node = self.acquire(resources, memory_mb=memory_mb, cores=cores, timeout=timeout)
        try:
            yield node
        finally:
            if node is not None:
                self.release(node)
