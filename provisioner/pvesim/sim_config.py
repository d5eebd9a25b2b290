"""How a simulated cluster is shaped: its nodes, template, pool, timings and files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

GIB = 1024**3
MIB = 1024**2


@dataclass
class SimConfig:
    nodes: list[str]
    template_vmid: int = 9001
    pool: str | None = "blockhost"  # "" / None: no privilege separation
    clone_seconds: float = 2.0
    task_seconds: float = 0.05
    state_file: Path | None = None
    snippets_dir: Path | None = None
    bridges: tuple[str, ...] = ("vmbr0",)
    node_maxmem: int = 64 * GIB
    node_maxcpu: int = 32
    template_storage: str = "local-lvm"
    extra_pools: tuple[str, ...] = field(default_factory=tuple)
