"""``PUT /pools/{poolid}`` on the simulator, through proxmoxer, with PVE's semantics: guests and
storages added or removed, a guest of another pool moved only with ``allow-move``, the
privileges checked per member, and a refused request changing nothing."""

from __future__ import annotations

from typing import Any

import pytest
from proxmoxer import ProxmoxAPI, ResourceException

from provisioner.pvesim.launcher import PveSim
from tests.support.pve import StartSim


def api(sim: PveSim) -> ProxmoxAPI:
    user, token_name = sim.token_id.split("!")
    return ProxmoxAPI(sim.host, port=sim.port, user=user, token_name=token_name,
                      token_value=sim.token_secret, verify_ssl=str(sim.ca_path),
                      service="PVE", timeout=10)


def error_of(call: Any, *args: Any, **kwargs: Any) -> ResourceException:
    with pytest.raises(ResourceException) as info:
        call(*args, **kwargs)
    return info.value


def pools_of(sim: PveSim) -> dict[int, Any]:
    return {vm["vmid"]: vm["pool"] for vm in sim.state()["vms"]}


def member_ids(sim: PveSim, pool: str) -> list[str]:
    return [m["id"] for m in api(sim).pools(pool).get()["members"]]


@pytest.fixture(scope="module")
def root_sim(module_sims: StartSim) -> PveSim:
    return module_sims(pool_scoped=False, clone_seconds=0.05, task_seconds=0.02)


@pytest.fixture(scope="module")
def scoped_sim(module_sims: StartSim) -> PveSim:
    return module_sims(pool_scoped=True, clone_seconds=0.05, task_seconds=0.02)


@pytest.fixture
def sim(root_sim: PveSim) -> PveSim:
    root_sim.reset()
    root_sim.create_vm(vmid=200, name="loose")
    root_sim.create_vm(vmid=201, name="elsewhere", pool="other")
    return root_sim


def test_a_guest_without_a_pool_is_added_and_removed(sim: PveSim) -> None:
    pool = api(sim).pools("blockhost")
    assert pool.put(vms="200", comment="ours") is None
    assert pools_of(sim)[200] == "blockhost"
    assert member_ids(sim, "blockhost") == ["qemu/200"]
    assert pool.get()["comment"] == "ours"
    already = error_of(pool.put, vms="200")
    assert already.status_code == 500 and "VM 200 is already a pool member" in str(already)
    pool.put(vms="200", delete=1)
    assert pools_of(sim)[200] is None and member_ids(sim, "blockhost") == []
    absent = error_of(pool.put, vms="200", delete=1)
    assert "VM 200 is not a pool member" in str(absent)


def test_a_guest_of_another_pool_moves_only_with_allow_move(sim: PveSim) -> None:
    pool = api(sim).pools("blockhost")
    refused = error_of(pool.put, vms="200,201")
    assert refused.status_code == 500
    assert "VM 201 belongs already to pool 'other' and 'allow-move' is not set" in str(refused)
    assert pools_of(sim)[200] is None and pools_of(sim)[201] == "other"  # nothing half-done
    pool.put(vms="200;201", **{"allow-move": 1})
    assert pools_of(sim)[200] == pools_of(sim)[201] == "blockhost"
    assert member_ids(sim, "other") == []


def test_storages_are_pool_members_on_every_node(sim: PveSim) -> None:
    pool = api(sim).pools("blockhost")
    pool.put(storage="local-lvm")
    assert member_ids(sim, "blockhost") == ["storage/pve1/local-lvm", "storage/pve2/local-lvm"]
    assert "Storage 'local-lvm' is already a pool member" in str(
        error_of(pool.put, storage="local-lvm"))
    assert "storage 'nfs9' does not exist" in str(error_of(pool.put, storage="nfs9"))
    pool.put(storage="local-lvm", delete=1)
    assert member_ids(sim, "blockhost") == []


def test_parameters_are_verified_and_unknown_things_refused(sim: PveSim) -> None:
    pool = api(sim).pools("blockhost")
    bad = error_of(pool.put, vms="99,abc", storage="Bad!", bogus=1)
    assert bad.status_code == 400 and set(bad.errors) == {"vms", "storage", "bogus"}
    assert "VM 777 does not exist" in str(error_of(pool.put, vms="777"))
    assert "pool 'nope' does not exist" in str(error_of(api(sim).pools("nope").put, vms="200"))
    assert pools_of(sim)[200] is None


def test_a_pool_scoped_token_cannot_take_guests_it_has_no_right_on(scoped_sim: PveSim) -> None:
    scoped_sim.reset()
    scoped_sim.create_vm(vmid=200, name="loose")
    scoped_sim.create_vm(vmid=201, name="elsewhere", pool="other")
    pool = api(scoped_sim).pools("blockhost")
    loose = error_of(pool.put, vms="200")
    assert loose.status_code == 403 and "/vms/200" in str(loose)
    elsewhere = error_of(pool.put, vms="201", **{"allow-move": 1})
    assert elsewhere.status_code == 403
    not_ours = error_of(api(scoped_sim).pools("other").put, vms="201", delete=1)
    assert not_ours.status_code == 403 and "Pool.Allocate" in str(not_ours)
    assert error_of(pool.put, storage="local").status_code == 403
    assert pools_of(scoped_sim) == {9001: None, 200: None, 201: "other"}
