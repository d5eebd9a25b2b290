"""``blockhost doctor``: every check of a configured host, in the order an operator fixes
things (config and files, chain, Proxmox, this host), each a :class:`Check`."""

from __future__ import annotations

from pathlib import Path

from listener.config import Config
from listener.ops.doctor.chain_checks import chain_checks
from listener.ops.doctor.check import Check, skipped
from listener.ops.doctor.config_files import load_checked_config, secret_file_checks
from listener.ops.doctor.local_checks import database_check, metrics_port_check
from listener.ops.doctor.markers_check import NAME as MARKERS_NAME
from listener.ops.doctor.markers_check import markers_check
from listener.ops.doctor.pve_connect import connect_check
from listener.ops.doctor.pve_pools import pools_check
from listener.ops.doctor.pve_privileges import privileges_check
from listener.ops.doctor.pve_resources import (
    bridge_check,
    pool_check,
    snippet_check,
    storage_check,
    template_check,
)

PVE_CHECKS = (privileges_check, template_check, pool_check, storage_check, bridge_check,
              snippet_check, pools_check, markers_check)
PVE_NAMES = ("PVE privileges", "template", "pool", "storage", "bridge", "snippet storage",
             "VMID and IP pools", MARKERS_NAME)


def pve_checks(config: Config) -> list[Check]:
    """The API check, then the rest over the same client (skipped when it did not answer)."""
    reach, client = connect_check(config)
    if client is None:
        return [reach, *(skipped(n, "the PVE API did not answer") for n in PVE_NAMES)]
    return [reach, *(check(client, config) for check in PVE_CHECKS)]


def run_checks(config_path: Path | None) -> list[Check]:
    """Every check; only the config's when the config itself does not load."""
    config, config_check = load_checked_config(config_path)
    if config is None:
        return [config_check]
    return [config_check, *secret_file_checks(config), *chain_checks(config),
            *pve_checks(config), database_check(config), metrics_port_check(config)]
