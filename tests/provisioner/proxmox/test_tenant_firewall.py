"""Tenant isolation through ProxmoxAPIBackend against the simulator over HTTPS: a created VM
may send only from its own addresses; destroy takes the set away; a crash between the create
steps converges on the same firewall."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from provisioner.backend import VMSpec
from provisioner.errors import PveError
from provisioner.proxmox.backend import ProxmoxAPIBackend
from provisioner.proxmox.firewall import IPSET
from provisioner.pvesim.launcher import PveSim
from tests.support.crashes import sigkill_when
from tests.support.paths import REPO_ROOT
from tests.support.pve import StartSim, api_backend

WORKER = r"""
import json, os, sys
from provisioner.backend import VMSpec
from provisioner.proxmox.backend import ProxmoxAPIBackend
args = json.loads(sys.argv[1])
backend = ProxmoxAPIBackend(args["url"], args["token_id"], os.environ["PVE_TOKEN_SECRET"],
                            verify=args["ca"], pool="blockhost", journal_dir=args["journal"],
                            poll_interval=0.02, task_timeout=60)
backend.create(VMSpec(**args["spec"]))
print("created", flush=True)
"""


@pytest.fixture(scope="module")
def module_sim(module_sims: StartSim) -> PveSim:
    return module_sims(clone_seconds=0.05, task_seconds=0.02)


@pytest.fixture
def sim(module_sim: PveSim) -> PveSim:
    module_sim.reset()
    return module_sim


def backend(sim: PveSim, tmp_path: Path) -> ProxmoxAPIBackend:
    return api_backend(sim, poll_interval=0.02, task_timeout=30, timeout=10,
                       journal_dir=tmp_path / "journal")


def spec(vmid: int = 300, sub: int = 7, **kw: Any) -> VMSpec:
    base = VMSpec(name=f"blockhost-{sub}", vmid=vmid, node="pve1", template_vmid=9001,
                  cores=1, memory_mb=1024, disk_gb=4, ipv4_cidr="10.0.0.7/24",
                  gateway4="10.0.0.1", ipv6_cidr="fd00:0:0::7/64", gateway6="fd00::1",
                  bridge="vmbr0", pool="blockhost", tags=(), subscription_id=sub,
                  username="u", user_data=None)
    return replace(base, **kw)


def live(sim: PveSim, vmid: int) -> dict[str, Any]:
    vm = sim.vm(vmid)
    assert vm is not None, f"VM {vmid} does not exist"
    return vm


def filter_of(sim: PveSim, vmid: int) -> tuple[dict[str, Any], list[str]]:
    """(options, entries of ipfilter-net0) as the simulator holds them."""
    vm = live(sim, vmid)
    firewall = vm["firewall"] or {"options": {}, "ipsets": {}}
    ipset = firewall["ipsets"].get(IPSET, {"entries": []})
    return firewall["options"], sorted(e["cidr"] for e in ipset["entries"])


def test_created_vm_filters_to_exactly_its_addresses(sim: PveSim, tmp_path: Path) -> None:
    backend(sim, tmp_path).create(spec())
    options, entries = filter_of(sim, 300)
    assert options["enable"] == 1 and options["ipfilter"] == 1
    assert options["policy_in"] == options["policy_out"] == "ACCEPT"
    assert entries == ["10.0.0.7", "fd00::7"]
    assert "firewall=1" in live(sim, 300)["config"]["net0"].split(",")
    assert live(sim, 300)["status"] == "running"


def test_ipv4_only_vm_gets_only_its_ipv4(sim: PveSim, tmp_path: Path) -> None:
    backend(sim, tmp_path).create(spec(ipv6_cidr=None, gateway6=None))
    assert filter_of(sim, 300)[1] == ["10.0.0.7"]


def test_a_rerun_removes_foreign_entries_and_restores_ours(sim: PveSim, tmp_path: Path) -> None:
    b = backend(sim, tmp_path)
    b.create(spec())
    base = "nodes/pve1/qemu/300/firewall"
    b.request("POST", f"{base}/ipset/{IPSET}", cidr="10.0.0.8")  # a neighbour's address
    b.request("DELETE", f"{base}/ipset/{IPSET}/10.0.0.7")
    b.request("PUT", f"{base}/options", ipfilter=0)
    b.create(spec())
    options, entries = filter_of(sim, 300)
    assert entries == ["10.0.0.7", "fd00::7"] and options["ipfilter"] == 1


def test_destroy_removes_the_set_before_the_vm(sim: PveSim, tmp_path: Path) -> None:
    b = backend(sim, tmp_path)
    ref = b.create(spec())
    sim.inject(op="destroy", mode="http_error", status=500, message="simulated", count=1)
    with pytest.raises(PveError):
        b.destroy(ref)
    assert filter_of(sim, 300)[1] == []  # the VM is still there, its entries are not
    assert IPSET not in live(sim, 300)["firewall"]["ipsets"]
    b.destroy(ref)
    assert sim.vm(300) is None
    # the id is reused for another tenant: nothing of the old set survives
    b.create(spec(sub=8, ipv4_cidr="10.0.0.9/24", ipv6_cidr=None, gateway6=None))
    assert filter_of(sim, 300)[1] == ["10.0.0.9"]


def run_worker(sim: PveSim, s: VMSpec, tmp_path: Path) -> subprocess.Popen[bytes]:
    args = {"url": sim.url, "token_id": sim.token_id, "ca": str(sim.ca_path),
            "journal": str(tmp_path / "journal"), "spec": s.__dict__}
    env = dict(os.environ, PVE_TOKEN_SECRET=sim.token_secret,
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    with open(tmp_path / "worker.log", "wb") as out:
        return subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(args)], env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def test_sigkill_between_firewall_steps_converges(sim: PveSim, tmp_path: Path) -> None:
    """Killed after the set got its first address but before the filter was switched on
    (the options PUT is held up): the next pass finishes the same firewall, nothing twice."""
    s = spec()
    sim.inject(op="fw_options_put", mode="latency", seconds=30, count=1)
    proc = run_worker(sim, s, tmp_path)

    def set_started() -> bool:
        vm = sim.vm(s.vmid)
        return bool(vm and filter_of(sim, s.vmid)[1])

    sigkill_when(proc, set_started, what="the first ipset entry",
                 output=lambda: (tmp_path / "worker.log").read_text())
    options, _ = filter_of(sim, s.vmid)
    assert options.get("ipfilter") != 1 and live(sim, s.vmid)["status"] == "stopped"
    sim.clear_faults()
    backend(sim, tmp_path).create(s)
    options, entries = filter_of(sim, s.vmid)
    assert options["ipfilter"] == 1 and entries == ["10.0.0.7", "fd00::7"]
    assert live(sim, s.vmid)["status"] == "running"
    assert [v["vmid"] for v in sim.state()["vms"] if not v["template"]] == [s.vmid]
