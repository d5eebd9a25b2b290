"""Deployment ids in the ownership markers: two backends of different deployments on one
simulator (same pool, tag, names and ranges) never list, adopt, stop or destroy each other's
VMs, never hand out each other's VMIDs or addresses, and an old-marker VM becomes ours only
through write_deployment_marker."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provisioner.backend import (
    VMRef,
    VMSpec,
    marker_for,
    other_deployment,
    ownership_problems,
    parse_marker,
)
from provisioner.errors import OwnershipMismatch, VmidTaken
from provisioner.inventory import Inventory, Pools
from provisioner.proxmox.backend import ProxmoxAPIBackend
from provisioner.proxmox.ownership import write_deployment_marker
from provisioner.proxmox.vm_view import inspect_vm
from provisioner.pvesim.launcher import PveSim
from provisioner.storage.sqlite_db import connect
from tests.support.pve import StartSim, api_backend

A, B = "1a2b3c4d", "9f8e7d6c"
POOLS = Pools(vmid_first=200, vmid_last=210, ipv4_first="10.10.0.20", ipv4_last="10.10.0.30",
              ipv4_prefixlen=24, ipv4_gateway="10.10.0.1")


@dataclass
class Two:
    sim: PveSim
    a: ProxmoxAPIBackend
    b: ProxmoxAPIBackend
    snippets: Path


@pytest.fixture(scope="module")
def sim(module_sims: StartSim) -> PveSim:
    return module_sims(pool_scoped=True, snippets=True, clone_seconds=0.05)


def backend(sim: PveSim, deployment: str | None) -> ProxmoxAPIBackend:
    return api_backend(sim, snippets_dir=sim.snippets_dir, poll_interval=0.02,
                       task_timeout=20, timeout=10, deployment=deployment)


@pytest.fixture
def two(sim: PveSim) -> Two:
    sim.reset()
    assert sim.snippets_dir is not None
    return Two(sim, backend(sim, A), backend(sim, B), sim.snippets_dir / "snippets")


def spec(vmid: int = 200, sub: int = 1, ip: str = "10.10.0.20", **kw: Any) -> VMSpec:
    base = VMSpec(name=f"blockhost-{sub:03d}", vmid=vmid, node="pve1", template_vmid=9001,
                  cores=1, memory_mb=512, disk_gb=10, ipv4_cidr=f"{ip}/24",
                  gateway4="10.10.0.1", ipv6_cidr=None, gateway6=None, bridge="vmbr0",
                  pool="blockhost", tags=(), subscription_id=sub, username="alice",
                  user_data=f"#cloud-config\nhostname: sub-{sub}\n")
    return replace(base, **kw)


# ----------------------------------------------------------------------------- pure rules


@given(st.one_of(st.none(), st.integers(0, 10**9)), st.sampled_from([None, A, B]))
def test_marker_round_trips_with_and_without_an_id(sub: int | None, dep: str | None) -> None:
    parsed = parse_marker(marker_for(sub, "blockhost-001", deployment=dep) + "\nnotes")
    assert parsed is not None
    assert (parsed.subscription_id, parsed.deployment) == (sub, dep)


@pytest.mark.parametrize("bad", ["ABCDEF12", "1a2b3c4", "1a2b3c4d5", "", "zzzzzzzz"])
def test_malformed_deployment_ids_neither_parse_nor_build(bad: str) -> None:
    assert parse_marker(f"managed-by=blockhost;deployment={bad};sub=1;name=x") is None
    with pytest.raises(ValueError, match="deployment id"):
        marker_for(1, "x", deployment=bad)


@dataclass
class View:
    description: str
    tags: tuple[str, ...]
    pool: str | None = "blockhost"
    name: str = "blockhost-001"
    smbios_uuid: str | None = None


def problems(vm: View, deployment: str | None) -> list[str]:
    return ownership_problems(vm, pool="blockhost", tag="blockhost", deployment=deployment,
                              subscription_id=1, name="blockhost-001", smbios_uuid=None,
                              require_tags=True)


def test_ownership_needs_exactly_our_deployment() -> None:
    ours = View(marker_for(1, "blockhost-001", deployment=A),
                ("blockhost", "sub-1", f"blockhost-{A}"))
    assert problems(ours, A) == []
    assert any("another deployment" in p for p in problems(ours, B))
    assert other_deployment(ours, tag="blockhost", deployment=B) == A
    legacy = View(marker_for(1, "blockhost-001"), ("blockhost", "sub-1"))
    assert problems(legacy, None) == []
    assert any("markers migrate" in p for p in problems(legacy, A))
    assert other_deployment(legacy, tag="blockhost", deployment=A) is None
    untagged = replace(ours, tags=("blockhost", "sub-1"))
    assert problems(untagged, A) == [f"tag 'blockhost-{A}' missing"]
    two_tags = replace(ours, tags=(*ours.tags, f"blockhost-{B}"))
    assert problems(two_tags, A) == [f"carries the tag of deployment {B}"]


# ----------------------------------------------------------------------------- simulator


def test_each_deployment_keeps_to_its_own_vms(two: Two) -> None:
    ref = two.a.create(spec())
    vm = two.sim.vm(200)
    assert vm["description"].split("\n")[0] == \
        f"managed-by=blockhost;deployment={A};sub=1;name=blockhost-001"
    assert f"blockhost-{A}" in vm["tags"]
    assert [s.vmid for s in two.a.list_managed()] == [200]
    assert two.b.list_managed() == []
    b_ref = VMRef(vmid=200, node="pve1", name="blockhost-001", subscription_id=1)
    for action in (two.b.stop, two.b.destroy):
        with pytest.raises(OwnershipMismatch, match="another deployment"):
            action(b_ref)
    with pytest.raises(VmidTaken, match="another deployment"):
        two.b.create(spec())  # same name, sub and VMID: still never adopted
    assert two.sim.vm(200)["status"] == "running"
    assert two.sim.vm(200)["smbios_uuid"] == ref.smbios_uuid


def test_allocation_skips_what_the_other_deployment_holds(two: Two) -> None:
    two.a.create(spec())
    inventory = Inventory(connect(":memory:"), occupied=two.b.occupied)
    record = inventory.reserve("blockhost-001", pools=POOLS, node="pve1", subscription_id=1)
    assert (record.vmid, record.ipv4) == (201, "10.10.0.21")
    # explicit values (an adopted VM's own) are the caller's to prove, not the allocator's
    explicit = inventory.reserve("blockhost-009", pools=POOLS, node="pve1", vmid=205,
                                 ipv4="10.10.0.20")
    assert (explicit.vmid, explicit.ipv4) == (205, "10.10.0.20")
    # A's own allocator is not blocked by its own VM's addresses (they are its leases)
    assert two.a.occupied().ipv4 == frozenset()


def test_same_names_keep_separate_snippets(two: Two) -> None:
    two.a.create(spec())
    two.b.create(spec(vmid=201, ip="10.10.0.21"))
    a_file, b_file = two.snippets / f"blockhost-001-{A}-user.yaml", \
        two.snippets / f"blockhost-001-{B}-user.yaml"
    assert a_file.exists() and b_file.exists()
    two.b.destroy(VMRef(vmid=201, node="pve1", name="blockhost-001", subscription_id=1))
    assert a_file.exists() and not b_file.exists()
    assert two.sim.vm(200) is not None and two.sim.vm(201) is None


def test_an_old_marker_becomes_ours_only_when_written(two: Two) -> None:
    legacy = backend(two.sim, None)
    legacy.create(spec())
    ref = VMRef(vmid=200, node="pve1", name="blockhost-001", subscription_id=1)
    assert two.a.list_managed() == []
    with pytest.raises(OwnershipMismatch, match="markers migrate"):
        two.a.stop(ref)
    view = inspect_vm(two.a, 200)
    assert view is not None
    write_deployment_marker(two.a, view, two.a.rules, 1)
    vm = two.sim.vm(200)
    assert vm["description"].startswith(f"managed-by=blockhost;deployment={A};sub=1;")
    assert f"blockhost-{A}" in vm["tags"]
    assert [s.vmid for s in two.a.list_managed()] == [200]
    assert two.b.list_managed() == [] and legacy.list_managed() == []
    two.a.stop(ref)
    assert two.sim.vm(200)["status"] == "stopped"


def test_terraform_renders_the_same_markers_and_snippet_name() -> None:
    from provisioner.terraform.render import snippet_file_name
    from provisioner.terraform.vm_blocks import ownership_markers

    fields = ownership_markers(spec(), tag="blockhost", deployment=A)
    parsed = parse_marker(fields["description"])
    assert parsed is not None and parsed.deployment == A
    assert fields["tags"] == sorted(["blockhost", "sub-1", f"blockhost-{A}"])
    assert snippet_file_name("blockhost-001", A) == f"blockhost-001-{A}-user.yaml"
    legacy = ownership_markers(spec(), tag="blockhost", deployment=None)
    assert legacy["tags"] == ["blockhost", "sub-1"]
    assert parse_marker(legacy["description"]) == parse_marker(marker_for(1, "blockhost-001"))
