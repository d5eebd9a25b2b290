"""The state document, its lock and its file: load, recover, save, reset, look things up.

All state lives in one JSON document guarded by one re-entrant lock; every change is written to
the state file atomically (temp file + fsync + rename), so a killed simulator restarts where
it was.
"""

from __future__ import annotations

import json
import threading
from typing import cast

from provisioner.pvesim.core.records import SimState, VmRecord
from provisioner.pvesim.core.topology import STATE_FORMAT, ensure_topology, initial_state, now
from provisioner.pvesim.errors import SimError
from provisioner.pvesim.sim_config import SimConfig
from provisioner.storage.atomic_file import write_atomic


class ClusterStore:
    """The whole simulated cluster's data. Callers hold ``lock`` while they read or change it."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.lock = threading.RLock()
        self.state = self._load() or initial_state()
        ensure_topology(self.state, cfg)
        self.save()

    def _load(self) -> SimState | None:
        path = self.cfg.state_file
        if path is None or not path.exists():
            return None
        with open(path, encoding="utf-8") as fh:
            state = cast(SimState, json.load(fh))
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"{path}: unsupported state format")
        _recover_after_restart(state)
        return state

    def save(self) -> None:
        path = self.cfg.state_file
        if path is None:
            return
        data = json.dumps(self.state, sort_keys=True, indent=1).encode()
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data, mode=0o600)

    def reset(self) -> None:
        """Back to a fresh cluster (same config), saved."""
        with self.lock:
            self.state = initial_state()
            ensure_topology(self.state, self.cfg)
            self.save()

    # -- lookups (callers hold the lock) ---------------------------------------------------

    def vms(self) -> dict[str, VmRecord]:
        return self.state["vms"]

    def get_vm(self, vmid: int) -> VmRecord | None:
        return self.vms().get(str(vmid))

    def check_node(self, node: str) -> None:
        """PVE's answers for an unknown node (name lookup) and an offline one (no route)."""
        info = self.state["nodes"].get(node)
        if info is None:
            raise SimError(500, f"hostname lookup '{node}' failed - failed to get address info "
                                f"for: {node}: Name or service not known")
        if info["status"] != "online":
            raise SimError(595, "Connection refused")

    def vm_on(self, node: str, vmid: int) -> VmRecord:
        """The VM, which must live on ``node`` (PVE looks for the node's config file)."""
        vm = self.get_vm(vmid)
        if vm is None or vm["node"] != node:
            raise SimError(500, f"Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' "
                                "does not exist")
        return vm


def _recover_after_restart(state: SimState) -> None:
    """Tasks that were running when the previous process died end in error; their
    locks (e.g. ``lock: clone``) stay in place - a stuck lock only root can clear."""
    for task in state.get("tasks", {}).values():
        if task["status"] == "running":
            task["status"] = "stopped"
            task["exitstatus"] = "unexpected status"
            task["endtime"] = int(now())
            task["log"].append("TASK ERROR: unexpected status")
