"""doctor's list of privileges against what the simulator (written from PVE's schema) checks
for the calls our backend makes, and its reading of PVE's permission tree."""

from __future__ import annotations

from pathlib import Path

from listener.config import build_config
from listener.ops.doctor.pve_privileges import POOL_PRIVS, held_at, required_privileges
from provisioner.pvesim.server.routes import VM_PRIVS

#: operations the simulator knows that our backend never calls
UNUSED_OPS = {"agent_ping", "template"}  # template: `blockhost template build`, root's job


def test_every_vm_privilege_the_backend_meets_is_required_on_the_pool() -> None:
    used = {priv for op, priv in VM_PRIVS.items() if op not in UNUSED_OPS}
    assert used <= set(POOL_PRIVS), used - set(POOL_PRIVS)


def test_required_paths_follow_the_config(tmp_path: Path) -> None:
    config = build_config({"proxmox": {"pool": "tenants", "template_vmid": 8000,
                                       "storage": "ceph", "cloudinit_storage": "cephfs"}})
    needed = required_privileges(config)
    assert set(needed) == {"/pool/tenants", "/vms/8000", "/nodes", "/storage/ceph",
                           "/storage/cephfs"}
    assert "VM.Clone" in needed["/vms/8000"] and "VM.Allocate" in needed["/pool/tenants"]


def test_a_path_inherits_only_propagated_privileges_of_its_nearest_listed_ancestor() -> None:
    tree = {"/": {"Sys.Audit": 0}, "/vms": {"VM.Audit": 1, "VM.Clone": 0},
            "/vms/9001": {"VM.Clone": 0}}
    assert held_at(tree, "/vms/9001") == {"VM.Clone"}
    assert held_at(tree, "/vms/100") == {"VM.Audit"}
    assert held_at(tree, "/nodes") == set()
    assert held_at(tree, "/") == {"Sys.Audit"}
