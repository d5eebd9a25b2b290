"""The daemon's start on a two-node cluster whose snippet storage is not shared (issue 13 item
11), against the PVE simulator: placement is limited to the node that can read the snippets,
or `blockhost listen` refuses to start with one line."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from structlog.testing import capture_logs

from listener.config import Config, PlanSize, build_config
from listener.devkit.devenv import write_secret_file
from listener.errors import UserError
from listener.ops.snippet_placement import limit_placement_to_snippet_readers
from listener.reconcile.placement import place_on
from listener.runtime.wiring import build_api_backend
from provisioner.proxmox.snippet_nodes import this_node
from provisioner.pvesim.launcher import PveSim
from tests.support.paths import REPO_ROOT

BIN = Path(sys.executable).parent
GIB = 1024**3


def document(tmp_path: Path, sim: PveSim, **proxmox: Any) -> dict[str, Any]:
    token_file = tmp_path / "pve-token"
    if not token_file.exists():
        write_secret_file(token_file, sim.token_secret)
    with socket.socket() as probe:  # an RPC nobody answers: the check comes first
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return {
        "chain": {"rpc_urls": [f"http://127.0.0.1:{port}"], "chain_id": 31337,
                  "subscription_contract": "0x" + "11" * 20},
        "proxmox": {"api_url": sim.url, "token_id": sim.token_id,
                    "token_secret_file": str(token_file), "verify_ssl": str(sim.ca_path),
                    "snippets_dir": str(tmp_path / "snippets"), "cloudinit_storage": "local",
                    **proxmox},
        "db": {"path": str(tmp_path / "blockhost.db")},
    }


def config_for(tmp_path: Path, sim: PveSim, **proxmox: Any) -> Config:
    return build_config(document(tmp_path, sim, **proxmox), origin="test")


def test_placement_is_limited_to_the_node_that_can_read_the_snippets(
        tmp_path: Path, pvesim: PveSim) -> None:
    pvesim.set_node("pve2", maxmem=256 * GIB)  # unlimited placement would pick pve2
    config = config_for(tmp_path, pvesim)
    with capture_logs() as logs:
        limited = limit_placement_to_snippet_readers(config, local_node="pve1")
    assert limited.proxmox.nodes == ["pve1"]
    [line] = [entry for entry in logs if entry["event"].startswith("placement.")]
    assert line["event"] == "placement.limited_to_snippet_readers"
    assert (line["nodes"], line["left_out"], line["storage"]) == (["pve1"], ["pve2"], "local")
    backend = build_api_backend(config)
    assert place_on(config, backend, PlanSize()) == "pve2"
    assert place_on(limited, backend, PlanSize()) == "pve1"


def test_nothing_changes_without_snippets_or_with_one_node(tmp_path: Path,
                                                           pvesim: PveSim) -> None:
    for config in (config_for(tmp_path, pvesim, snippets_dir=None),
                   config_for(tmp_path, pvesim, nodes=["pve2"])):
        assert limit_placement_to_snippet_readers(config, local_node="elsewhere") is config


def test_a_storage_pve_does_not_list_is_refused_with_what_to_check(tmp_path: Path,
                                                                   pvesim: PveSim) -> None:
    config = config_for(tmp_path, pvesim, cloudinit_storage="snipets")
    with pytest.raises(UserError, match=r"PVE lists no storage 'snipets' .* Datastore.Audit"):
        limit_placement_to_snippet_readers(config, local_node="pve1")


def test_listen_refuses_to_start_when_no_node_can_read_the_snippets(
        tmp_path: Path, pvesim: PveSim) -> None:
    if this_node() in ("pve1", "pve2"):
        pytest.skip("this host is named like a simulated node")
    config_path = tmp_path / "blockhost.yaml"
    config_path.write_text(yaml.safe_dump(document(tmp_path, pvesim)))
    proc = subprocess.run([str(BIN / "blockhost"), "--config", str(config_path), "listen"],
                          capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert proc.returncode == 1
    [line] = proc.stderr.strip().splitlines()
    assert "no node placement may use (pve1, pve2) can read the user-data snippets" in line
    assert "storage 'local'" in line and "README" in line
