"""Which node a new VM goes to: the allowed online node with the most room for its size.

Used at allocation by the reconciler and by ``vm create``; the create step itself takes a
per-node slot from :class:`provisioner.placement.PlacementLimiter`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from listener.config import Config, PlanSize
from listener.reconcile.reconciler import Services
from provisioner.placement import PlacementLimits, choose_node
from provisioner.proxmox.client import ClusterResource


@runtime_checkable
class NodeSource(Protocol):
    """What placement reads: PVE's /cluster/resources node entries."""

    def node_resources(self) -> list[ClusterResource]: ...


def node_resources(backend: object) -> list[ClusterResource]:
    """The node entries from the API backend (the Terraform one reads through its ``api``)."""
    source = getattr(backend, "api", backend)
    if not isinstance(source, NodeSource):
        raise TypeError(f"{type(backend).__name__} cannot list the cluster's nodes")
    return source.node_resources()


def place(services: Services, size: PlanSize) -> str:
    """Placement at allocation: the allowed online node with the most room for this size.

    In-flight creates are not counted here (allocation only reserves ids); the create step
    takes a per-node slot from the limiter, so a busy node delays, never overloads."""
    return place_on(services.config, services.backend, size)


def place_on(config: Config, backend: object, size: PlanSize) -> str:
    """:func:`place` for callers without a Services bundle (``vm create``)."""
    px = config.proxmox
    limits = PlacementLimits(per_node=px.max_parallel_per_node, total=px.max_parallel)
    node = choose_node(node_resources(backend), px.nodes, {}, limits,
                       memory_mb=size.memory, cores=size.cores)
    assert node is not None  # nothing in flight: only PlacementError can refuse
    return node
