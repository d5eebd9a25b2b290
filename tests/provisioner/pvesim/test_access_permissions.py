"""``GET /access/permissions`` on the simulator: the calling token's effective privileges,
as PVE answers them, and a narrowed pool role that the other endpoints honour too."""

from __future__ import annotations

from pathlib import Path

import pytest
from proxmoxer import ProxmoxAPI, ResourceException

from provisioner.pvesim.core.privileges import ALL_PRIVS, VM_ADMIN
from provisioner.pvesim.launcher import PveSim
from tests.provisioner.pvesim.acl_setup import with_pool_privileges, without
from tests.support.pve import POOL_TOKEN, start_sim


def prox(sim: PveSim) -> ProxmoxAPI:
    user, token_name = sim.token_id.split("!")
    return ProxmoxAPI(sim.host, port=sim.port, user=user, token_name=token_name,
                      token_value=sim.token_secret, verify_ssl=str(sim.ca_path), service="PVE",
                      timeout=10)


def test_root_token_holds_everything_on_the_root(tmp_path: Path) -> None:
    sim = start_sim(tmp_path, pool_scoped=False)
    try:
        tree = prox(sim).access.permissions.get()
        assert tree == {"/": dict.fromkeys(ALL_PRIVS, 1)}
        one = prox(sim).access.permissions.get(path="/vms/123")
        assert one == {"/vms/123": dict.fromkeys(ALL_PRIVS, 1)}
    finally:
        sim.stop()


def test_pool_token_tree_and_single_paths(tmp_path: Path) -> None:
    sim = start_sim(tmp_path)
    try:
        px = prox(sim)
        tree = px.access.permissions.get(userid=sim.token_id)
        assert set(tree) == {"/nodes", "/pool/blockhost", "/storage", "/vms/9001"}
        assert tree["/vms/9001"] == {"VM.Audit": 1, "VM.Clone": 1}
        assert tree["/nodes"] == {"Sys.Audit": 1}
        assert "VM.Allocate" in tree["/pool/blockhost"]
        assert tree["/storage"] == {"Datastore.AllocateSpace": 1, "Datastore.Audit": 1}
        assert px.access.permissions.get(path="/vms/700") == {"/vms/700": {}}
        # another user's permissions need Sys.Audit on /access
        with pytest.raises(ResourceException) as info:
            px.access.permissions.get(userid="root@pam")
        assert info.value.status_code == 403
        with pytest.raises(ResourceException) as info:
            px.access.permissions.get(userid="not a user")
        assert info.value.status_code == 400 and "userid" in info.value.errors
        # the token's own user (privilege separation: what the store models for the token)
        assert px.access.permissions.get(userid=POOL_TOKEN.split("!")[0]) == tree
    finally:
        sim.stop()


def test_narrowed_pool_role_shows_and_is_enforced(tmp_path: Path) -> None:
    sim = with_pool_privileges(start_sim(tmp_path, clone_seconds=0.05),
                               without("VM.Allocate"))
    try:
        px = prox(sim)
        held = px.access.permissions.get(path="/pool/blockhost")["/pool/blockhost"]
        assert set(held) == set(VM_ADMIN) - {"VM.Allocate"}
        with pytest.raises(ResourceException) as info:
            px.nodes("pve1").qemu(9001).clone.post(newid=701, name="vm701", pool="blockhost")
        assert info.value.content == "Permission check failed (/pool/blockhost, VM.Allocate)"
    finally:
        sim.stop()
