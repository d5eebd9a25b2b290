"""Giving the simulated pool-scoped token a smaller role on its pool, as an operator would by
editing the ACL: the state file is the simulator's /etc/pve, read when it starts."""

from __future__ import annotations

import json
from collections.abc import Iterable

from provisioner.pvesim.core.privileges import VM_ADMIN
from provisioner.pvesim.launcher import PveSim


def with_pool_privileges(sim: PveSim, privs: Iterable[str]) -> PveSim:
    """``sim`` restarted with the token holding only ``privs`` on its pool."""
    sim.stop()
    state = json.loads(sim.state_file.read_text())
    state["pool_privs"] = sorted(privs)
    sim.state_file.write_text(json.dumps(state))
    return sim.restart()


def without(*privs: str) -> list[str]:
    """PVEVMAdmin minus ``privs``."""
    return [p for p in VM_ADMIN if p not in privs]
