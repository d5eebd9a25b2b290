"""VMs awaiting `blockhost markers migrate`: after the upgrade that brought deployment ids, a
VM made before them is not the daemon's until its marker carries our id. A daemon started
before the migration shows such VMs missing and dead-letters their expiry, so `listen`
refuses to start while our inventory knows any. Old-marker VMs our inventory does not know
are only named (they are not ours to touch). Read-only: `markers migrate --dry-run`'s plan."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from listener.config import Config
from listener.ops.database import open_database
from listener.ops.doctor.check import Check, failed, guarded, passed, skipped
from listener.ops.doctor.pve_connect import PVE_TIMEOUT
from listener.ops.markers import MarkerOutcome, plan_old_markers
from listener.runtime.wiring import config_deployment, read_secret_file
from provisioner.inventory import Inventory, VMRecord
from provisioner.proxmox.backend import ProxmoxAPIBackend
from provisioner.proxmox.client import PveClient

NAME = "VMs awaiting `blockhost markers migrate`"
COMMAND = "blockhost markers migrate"
#: old-marker VMs named in one line at most (the rest are counted)
MAX_NAMED = 5


@dataclass(frozen=True)
class OldMarkers:
    """The old-marker VMs with our tag: the ones migrate adopts, and the ones it leaves."""

    awaiting: list[MarkerOutcome]
    left_alone: list[MarkerOutcome]


def _records(config: Config) -> dict[int, VMRecord]:
    """Our inventory's live records (none before the listener's first start)."""
    if not config.db.path.exists():
        return {}
    store = open_database(config)
    try:
        return {r.vmid: r for r in Inventory(store.conn).list()}
    finally:
        store.close()


def _backend(config: Config, deployment: str, timeout: float) -> ProxmoxAPIBackend:
    """A backend used only to read: no clone journal, no snippet directory."""
    px = config.proxmox
    verify: bool | str = str(px.verify_ssl) if isinstance(px.verify_ssl, Path) else px.verify_ssl
    return ProxmoxAPIBackend(
        px.api_url, px.token_id or "", read_secret_file(px.token_secret_file,
                                                       "Proxmox token secret"),
        verify=verify, pool=px.pool, tag=px.tag, timeout=timeout, deployment=deployment)


def old_markers(config: Config, *, chain_id: int | None = None,
                timeout: float = PVE_TIMEOUT) -> OldMarkers | None:
    """The plan for old-marker VMs (None: the config has no deployment id to migrate to)."""
    deployment = config_deployment(config, chain_id)
    if deployment is None:
        return None
    records = _records(config)
    outcomes = plan_old_markers(_backend(config, deployment.id, timeout), records)
    return OldMarkers([o for o in outcomes if o.action == "would migrate"],
                      [o for o in outcomes if o.action != "would migrate"])


def _named(outcomes: list[MarkerOutcome]) -> str:
    shown = [f"VM {o.vmid} ({o.name})" for o in outcomes[:MAX_NAMED]]
    more = len(outcomes) - len(shown)
    return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")


def awaiting_failure(found: OldMarkers) -> Check | None:
    """The ✗ for VMs our inventory knows that still carry the old marker, if any."""
    if not found.awaiting:
        return None
    return failed(NAME, f"{len(found.awaiting)} VM(s) of ours carry the marker from before "
                        f"deployment ids: {_named(found.awaiting)}",
                  f"run `{COMMAND}` (`--dry-run` first shows the plan), then start again")


def verdict(found: OldMarkers | None) -> Check:
    if found is None:
        return skipped(NAME, "no deployment id (set chain.chain_id and "
                             "chain.subscription_contract): nothing to migrate to")
    failure = awaiting_failure(found)
    if failure is not None:
        return failure
    if found.left_alone:
        return passed(NAME, "none of ours; left alone, not ours to touch: "
                            f"{_named(found.left_alone)} (old marker, not matching our "
                            f"inventory: `{COMMAND} --dry-run` says why)")
    return passed(NAME, "no VM carries our marker from before deployment ids")


def markers_check(client: PveClient, config: Config) -> Check:
    """Doctor's line (``client`` only proves the API answered: the plan needs a backend)."""
    del client
    return guarded(NAME, f"check the database and the token, then `{COMMAND} --dry-run`",
                   lambda: verdict(old_markers(config)))
