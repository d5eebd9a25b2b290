"""The simulator's VM firewall endpoints answer like PVE: parameters checked against the
schema, per-VM state that a clone copies and a destroy removes."""

from __future__ import annotations

from typing import Any

import pytest
from proxmoxer import ProxmoxAPI, ResourceException

from provisioner.pvesim.launcher import PveSim
from tests.support.pve import StartSim


@pytest.fixture(scope="module")
def module_sim(module_sims: StartSim) -> PveSim:
    return module_sims(pool_scoped=False, clone_seconds=0.05, task_seconds=0.02)


@pytest.fixture
def sim(module_sim: PveSim) -> PveSim:
    module_sim.reset()
    module_sim.create_vm(vmid=200, name="vm-a")
    return module_sim


def api(sim: PveSim) -> ProxmoxAPI:
    user, token_name = sim.token_id.split("!")
    return ProxmoxAPI(sim.host, port=sim.port, user=user, token_name=token_name,
                      token_value=sim.token_secret, verify_ssl=str(sim.ca_path),
                      service="PVE", timeout=10)


def fw(sim: PveSim, vmid: int = 200) -> Any:
    return api(sim).nodes("pve1").qemu(vmid).firewall


def error_of(call: Any, *args: Any, **kwargs: Any) -> ResourceException:
    with pytest.raises(ResourceException) as info:
        call(*args, **kwargs)
    return info.value


def test_options_are_stored_checked_and_deleted(sim: PveSim) -> None:
    assert fw(sim).options.get() == {}
    fw(sim).options.put(enable=1, ipfilter=1, policy_in="ACCEPT")
    assert fw(sim).options.get() == {"enable": 1, "ipfilter": 1, "policy_in": "ACCEPT"}
    bad = error_of(fw(sim).options.put, policy_in="MAYBE", isolation=1)
    assert bad.status_code == 400
    assert set(bad.errors) == {"policy_in", "isolation"}
    fw(sim).options.put(delete="policy_in")
    assert fw(sim).options.get() == {"enable": 1, "ipfilter": 1}


def test_ipset_lifecycle_has_pve_semantics(sim: PveSim) -> None:
    fw(sim).ipset.post(name="ipfilter-net0")
    assert "already exists" in str(error_of(fw(sim).ipset.post, name="ipfilter-net0"))
    assert error_of(fw(sim).ipset.post, name="0bad").status_code == 400
    fw(sim).ipset("ipfilter-net0").post(cidr="10.0.0.7")
    fw(sim).ipset("ipfilter-net0").post(cidr="fd00:0::7")
    assert "already exists" in str(error_of(fw(sim).ipset("ipfilter-net0").post,
                                            cidr="10.0.0.7"))
    assert error_of(fw(sim).ipset("ipfilter-net0").post, cidr="10.0.0.7/24").status_code == 400
    entries = fw(sim).ipset("ipfilter-net0").get()
    assert [e["cidr"] for e in entries] == ["10.0.0.7", "fd00::7"]
    assert all(e["digest"] == entries[0]["digest"] for e in entries)
    assert "not empty" in str(error_of(fw(sim).ipset("ipfilter-net0").delete))
    fw(sim).ipset("ipfilter-net0")("10.0.0.99").delete()  # absent: PVE filters, no error
    fw(sim).ipset("ipfilter-net0")("10.0.0.7").delete()
    assert [e["cidr"] for e in fw(sim).ipset("ipfilter-net0").get()] == ["fd00::7"]
    fw(sim).ipset("ipfilter-net0").delete(force=1)
    assert fw(sim).ipset.get() == []
    assert "no such IPSet" in str(error_of(fw(sim).ipset("ipfilter-net0").get))


def test_a_stale_digest_is_refused(sim: PveSim) -> None:
    fw(sim).ipset.post(name="ipfilter-net0")
    digest = fw(sim).ipset.get()[0]["digest"]
    fw(sim).ipset("ipfilter-net0").post(cidr="10.0.0.7")
    assert "detected modified" in str(error_of(fw(sim).options.put, enable=1, digest=digest))


def test_firewall_goes_with_the_vm_and_a_clone_copies_it(sim: PveSim) -> None:
    fw(sim, 9001).ipset.post(name="ipfilter-net0")
    fw(sim, 9001).ipset("ipfilter-net0").post(cidr="10.9.9.9")
    sim.create_vm(vmid=201, name="vm-b")
    fw(sim, 201).options.put(enable=1)
    upid = api(sim).nodes("pve1").qemu(9001).clone.post(newid=202, name="vm-c")
    sim.finish_task(upid)
    clone = sim.vm(202)
    assert clone is not None
    assert clone["firewall"]["ipsets"]["ipfilter-net0"]["entries"][0]["cidr"] == "10.9.9.9"
    sim.finish_task(api(sim).nodes("pve1").qemu(201).delete())
    sim.create_vm(vmid=201, name="vm-b")
    assert fw(sim, 201).options.get() == {}
    assert "does not exist" in str(error_of(fw(sim, 555).options.get))
