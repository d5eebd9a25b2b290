"""The PVE simulator set-ups the tests share: the pool-scoped token, one way to start a
simulator, and a backend that talks to it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from provisioner.proxmox.backend import ProxmoxAPIBackend
from provisioner.pvesim.launcher import PveSim, start_pvesim

#: a token that only holds privileges on the pool 'blockhost' (the production setup)
POOL_TOKEN = "blockhost@pve!provisioner=5d1c0c3a-9a7e-4f7e-b0f4-2b3f9a1c7d10"

#: what the ``module_sims`` fixture hands out: ``start_sim`` without the work directory
StartSim = Callable[..., PveSim]


def start_sim(workdir: Path, *, pool_scoped: bool = True, snippets: bool = False,
              **options: Any) -> PveSim:
    """A simulator working in ``workdir``: with the pool-scoped token unless ``pool_scoped``
    is False (then a root token), and with ``snippets`` its storage 'local' is the real
    directory ``sim.snippets_dir``, so cicustom snippets and imported images are checked.
    ``options`` go to ``start_pvesim`` (clone_seconds, nodes, ...)."""
    snippets_dir = workdir / "storage-local" if snippets else None
    if snippets_dir is not None:
        snippets_dir.mkdir(parents=True, exist_ok=True)
    return start_pvesim(workdir / "sim", token=POOL_TOKEN if pool_scoped else None,
                        snippets_dir=snippets_dir, **options)


def api_backend(sim: PveSim, **options: Any) -> ProxmoxAPIBackend:
    """A ProxmoxAPIBackend with ``sim``'s URL and token, trusting its CA, for the pool
    'blockhost'; ``options`` go to the backend (and may override those two)."""
    return ProxmoxAPIBackend(sim.url, sim.token_id, sim.token_secret,
                             **{"verify": str(sim.ca_path), "pool": "blockhost", **options})
