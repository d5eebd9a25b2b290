"""What the daemon expects to find in the cluster: the template, the pool, the disk storage,
the bridge, and user-data snippets every node placement may pick can read."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import cast

from listener.config import Config
from listener.ops.doctor.check import Check, failed, guarded, passed, skipped
from provisioner.errors import NotFound, PermissionDenied, PveError
from provisioner.proxmox.client import PveClient
from provisioner.proxmox.snippet_nodes import placement_candidates, read_snippet_reach, this_node

Entries = Sequence[Mapping[str, object]]


def _entries(client: PveClient, rtype: str) -> Entries:
    return [cast("Mapping[str, object]", e) for e in client.resources(rtype)]


def candidates(client: PveClient, config: Config) -> tuple[str, ...]:
    """The nodes placement may pick (``proxmox.nodes`` among the cluster's)."""
    return placement_candidates(_entries(client, "node"), config.proxmox.nodes)


def template_check(client: PveClient, config: Config) -> Check:
    name, vmid = "template", config.proxmox.template_vmid

    def run() -> Check:
        found = [e for e in _entries(client, "vm") if e.get("vmid") == vmid]
        if not found:
            return failed(name, f"no VM {vmid} in the cluster (or the token may not audit it)",
                          "run `blockhost template build`, or fix proxmox.template_vmid")
        entry = found[0]
        if not entry.get("template"):
            return failed(name, f"VM {vmid} ({entry.get('name')}) is not a template",
                          f"convert it (qm template {vmid}) or fix proxmox.template_vmid")
        return passed(name, f"VM {vmid} ({entry.get('name')}) on {entry.get('node')} is a "
                            "template")

    return guarded(name, "check proxmox.template_vmid", run)


def pool_check(client: PveClient, config: Config) -> Check:
    name, pool = "pool", config.proxmox.pool

    def run() -> Check:
        try:
            client.get_object(f"pools/{pool}")
        except PermissionDenied:
            return skipped(name, f"the token may not audit /pool/{pool} (Pool.Audit; the "
                                 "daemon does not need it)")
        except PveError as exc:
            if not (isinstance(exc, NotFound) or "does not exist" in exc.message):
                raise
            return failed(name, f"pool '{pool}': {exc.message}",
                          f"create it (pveum pool add {pool}) or fix proxmox.pool")
        return passed(name, f"pool '{pool}' exists")

    return guarded(name, "check proxmox.pool", run)


def storage_check(client: PveClient, config: Config) -> Check:
    name, storage = "storage", config.proxmox.storage

    def run() -> Check:
        nodes = candidates(client, config)
        holders = {str(e.get("node")) for e in _entries(client, "storage")
                   if e.get("storage") == storage
                   and "images" in str(e.get("content") or "").split(",")}
        lacking = [n for n in nodes if n not in holders]
        if lacking:
            return failed(name, f"storage '{storage}' for VM disks is not on "
                                f"{', '.join(lacking)} (or not for images)",
                          "fix proxmox.storage, or limit proxmox.nodes to nodes that have it")
        return passed(name, f"storage '{storage}' holds images on {', '.join(nodes)}")

    return guarded(name, "check proxmox.storage", run)


def bridge_check(client: PveClient, config: Config,
                 sys_net: Path = Path("/sys/class/net")) -> Check:
    """The bridge, checked on this host when it is a node placement may pick (PVE's network
    listing is not among the calls the daemon's token makes)."""
    name, bridge = "bridge", config.network.bridge

    def run() -> Check:
        local = this_node()
        if local not in candidates(client, config):
            return skipped(name, f"this host ({local}) is no node placement may pick; check "
                                 f"'{bridge}' on the nodes (ip link show {bridge})")
        if not (sys_net / bridge / "bridge").is_dir():
            return failed(name, f"this node ({local}) has no bridge '{bridge}'",
                          "fix network.bridge or create the bridge")
        return passed(name, f"bridge '{bridge}' exists on {local}")

    return guarded(name, "check network.bridge", run)


def _snippet_dir_problem(config: Config) -> str | None:
    snippets = config.proxmox.snippets_dir
    if snippets is None:
        return None
    target = snippets / "snippets"
    existing = target if target.exists() else snippets
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not a directory this user may write"
    return None


def snippet_check(client: PveClient, config: Config) -> Check:
    name, px = "snippet storage", config.proxmox

    def run() -> Check:
        if px.backend != "api" or px.snippets_dir is None:
            return skipped(name, "no local snippets are written (terraform backend or no "
                                 "proxmox.snippets_dir)")
        problem = _snippet_dir_problem(config)
        if problem:
            return failed(name, problem, "fix proxmox.snippets_dir or its owner")
        reach = read_snippet_reach(client, storage=px.cloudinit_storage, allowed=px.nodes)
        if reach is None:
            return passed(name, f"{px.snippets_dir} writable; placement uses one node")
        if not reach.everywhere:
            left = [n for n in reach.candidates if n not in reach.readable]
            return failed(name, f"storage '{px.cloudinit_storage}' is not readable from "
                                f"{', '.join(left)} (not shared with snippets content)",
                          "share the storage with 'snippets' content (README 'Operating it') "
                          "or limit proxmox.nodes")
        return passed(name, f"storage '{px.cloudinit_storage}' readable from "
                            f"{', '.join(reach.candidates)}")

    return guarded(name, "check proxmox.cloudinit_storage and proxmox.snippets_dir", run)
