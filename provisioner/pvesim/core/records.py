"""The shape of the state document: what the state file holds, record by record.

The document is plain JSON (it is written to and read back from the state file as is), so the
records are TypedDicts. A VM's config and a task's action stay open dicts: their keys are PVE's
config keys and the parameters of each operation.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

#: a qemu-server config: PVE config key -> value as PVE stores it (string, int or float)
VmConfig = dict[str, Any]
#: parameters of one API call after verification (types per key come from ``params``)
Params = dict[str, Any]
#: what a task's worker needs to finish the operation (``op`` names it)
Action = dict[str, Any]
#: an answer rendered as JSON (entries of listings, status objects)
Entry = dict[str, Any]


class NodeInfo(TypedDict):
    status: str
    maxmem: int
    mem_base: int
    maxcpu: int
    booted: float


class PoolInfo(TypedDict):
    comment: str


class GuestBehaviour(TypedDict):
    acpi: bool
    agent: bool


class BootInfo(TypedDict):
    at: float
    user_data: str | None


class IpsetRecord(TypedDict):
    comment: str | None
    entries: list[dict[str, Any]]  # {"cidr": str, "comment": str | None, "nomatch": int}


class FirewallRecord(TypedDict):
    options: dict[str, Any]
    ipsets: dict[str, IpsetRecord]  # name -> set


class VmRecord(TypedDict):
    vmid: int
    node: str
    config: VmConfig
    status: str
    pool: str | None
    started_at: float | None
    pid: int | None
    guest: GuestBehaviour
    boot: BootInfo | None
    boots: NotRequired[int]
    firewall: NotRequired[FirewallRecord]


class TaskFault(TypedDict):
    mode: str
    message: str


class TaskRecord(TypedDict):
    upid: str
    node: str
    pid: int
    pstart: int
    starttime: int
    type: str
    id: str
    user: str
    status: str
    end_at: float
    action: Action
    log: list[str]
    fault: TaskFault | None
    exitstatus: NotRequired[str]
    endtime: NotRequired[int]


class FaultRecord(TypedDict):
    id: int
    op: str
    mode: str
    count: int
    skip: int
    message: str | None
    status: int
    seconds: float
    vmid: int | str | None
    node: str | None
    newid: int | str | None
    hits: int


class SimState(TypedDict):
    format: int
    created: float
    nodes: dict[str, NodeInfo]
    pools: dict[str, PoolInfo]
    vms: dict[str, VmRecord]
    tasks: dict[str, TaskRecord]
    faults: list[FaultRecord]
    next_fault_id: int
    pid_counter: int
    #: what the token's role on its pool grants, when narrowed (core.permissions)
    pool_privs: NotRequired[list[str]]
