"""`blockhost import-reference` (issue 14) on anvil and the PVE simulator: VMs made the way the
reference system made them (its names, its legacy purchase, its 7-argument mint with the static
publicSecret, its vms.json), imported, then the real `listen` from the current head: zero clones,
zero mints; a renewal moves the NFT's expiry and an expiry suspends the VM; a new purchase gets
ids the reference's VMs hold by no means. A VM outside any pool is moved into ours; one in
another pool (PVE refuses without allow-move) and one bought below --from-block are reported
and left untouched."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from listener.chain.contracts import load_abi, send_transaction
from listener.crypto.credentials import ConnectionDetails, encrypt_connection_details
from listener.crypto.user_secret import sign_public_secret
from listener.devkit.devenv import DevEnv
from listener.userkit.subscriber import extend, subscribe
from tests.support.cli import run_blockhost

pytestmark = pytest.mark.slow
DAY = 86_400
SECRET = "blockhost-access"


@pytest.fixture
def env(dev_env: DevEnv) -> DevEnv:
    return dev_env


def nft(env: DevEnv) -> Any:
    return env.w3.eth.contract(address=env.deployment["nft"],
                               abi=load_abi("AccessCredentialNFT"))


def chain_expiry(env: DevEnv, sub_id: int) -> int:
    return int(env.w3.eth.contract(
        address=env.deployment["subscriptions"], abi=load_abi("BlockhostSubscriptions"),
    ).functions.getSubscription(sub_id).call()[2])


def reference_vm(env: DevEnv, user_index: int, *, days: int, vmid: int, ip: str,
                 legacy_token_record: bool, pool: str | None = "blockhost",
                 ) -> tuple[int, dict[str, Any], int]:
    """Buy (the reference's legacy purchase), make the VM and mint its NFT as the reference
    did; return (subscription id, its vms.json record, token id)."""
    user = env.user(user_index)
    env.fund(user)
    sub_id = subscribe(env.w3, user, subscription_contract=env.deployment["subscriptions"],
                       server_public_key=env.server_public_key, plan_id=1, days=days,
                       legacy=True).subscription_id
    name = f"blockhost-{sub_id:03d}"
    env.sim.create_vm(vmid=vmid, name=name, status="running", pool=pool,
                      description="made by the reference vm-generator",
                      config={"ipconfig0": f"ip={ip}/24,gw=10.77.0.1"})
    sealed = encrypt_connection_details(sign_public_secret(bytes(user.key), SECRET),
                                        ConnectionDetails(hostname=ip, port=22, username="admin"))
    token_id = int(nft(env).functions.totalSupply().call())
    send_transaction(env.w3, env.user(0), nft(env).functions.mint(
        user.address, sealed, SECRET, "Blockhost access", "", "", chain_expiry(env, sub_id)))
    record = {"vm_name": name, "vmid": vmid, "ip_address": ip, "ipv6_address": None,
              "expires_at": datetime.fromtimestamp(chain_expiry(env, sub_id), UTC).isoformat(),
              "owner": "admin", "status": "active", "created_at": "2026-01-01T00:00:00+00:00",
              "purpose": "", "wallet_address": user.address}
    if not legacy_token_record:
        record.update(nft_token_id=token_id, nft_minted=True)
    return sub_id, record, token_id


def write_reference(tmp_path: Path, env: DevEnv, vms: dict[str, Any],
                    reserved: dict[str, Any]) -> tuple[Path, Path]:
    vms_json = tmp_path / "vms.json"
    vms_json.write_text(json.dumps({
        "vms": vms, "next_vmid": 100002, "allocated_ips": ["10.77.0.10", "10.77.0.11"],
        "allocated_ipv6": [], "reserved_nft_tokens": reserved}))
    config_dir = tmp_path / "etc-blockhost"
    config_dir.mkdir()
    (config_dir / "blockhost.yaml").write_text(yaml.safe_dump({
        "public_secret": SECRET, "contract_address": env.deployment["subscriptions"],
        "server_public_key": env.server_public_key.hex()}))
    return vms_json, config_dir


def clone_tasks(env: DevEnv) -> int:
    return sum(1 for task in env.sim.state()["tasks"] if "clone" in str(task.get("type")))


def test_the_reference_vms_are_served_without_a_clone_or_a_mint(
        env: DevEnv, tmp_path: Path) -> None:
    first_block = env.w3.eth.block_number + 1
    kept, kept_record, kept_token = reference_vm(env, 1, days=10, vmid=100000, ip="10.77.0.10",
                                                 legacy_token_record=False, pool=None)
    ending, ending_record, ending_token = reference_vm(
        env, 2, days=1, vmid=100001, ip="10.77.0.11", legacy_token_record=True)
    elsewhere, elsewhere_record, _token = reference_vm(
        env, 3, days=10, vmid=100005, ip="10.77.0.15", legacy_token_record=False, pool="other")
    gone = {"vm_name": "blockhost-099", "vmid": 100099, "ip_address": "10.77.0.99",
            "expires_at": "2026-01-01T00:00:00Z", "owner": "admin", "status": "active",
            "wallet_address": env.user(3).address}
    vms = {kept_record["vm_name"]: kept_record, ending_record["vm_name"]: ending_record,
           elsewhere_record["vm_name"]: elsewhere_record, "blockhost-099": gone}
    vms_json, config_dir = write_reference(
        tmp_path, env, vms, {str(ending_token): {"vm_name": ending_record["vm_name"],
                                                 "status": "minted"}})
    supply, clones = nft(env).functions.totalSupply().call(), clone_tasks(env)

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"vms": {"blockhost-001": {**kept_record, "vmid": "x"}}}))

    def import_reference(vms_file: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        return run_blockhost(env.config_path, "import-reference", "--vms-json", str(vms_file),
                             "--config-dir", str(config_dir), *extra)

    refused = import_reference(bad)
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1
    assert "vmid" in refused.stderr and "nothing was imported" in refused.stderr
    assert not env.db_path.exists()

    dry = import_reference(vms_json, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would adopt blockhost-001" in dry.stdout
    assert env.db_rows("SELECT COUNT(*) FROM vms") == [(0,)]
    late = import_reference(vms_json, "--dry-run", "--from-block", str(env.w3.eth.block_number))
    assert late.returncode == 0, late.stderr
    assert f"not adopted: blockhost-{kept:03d} (vmid 100000): the purchase of subscription " \
           f"{kept} is not at or above block {env.w3.eth.block_number}; pass a lower " \
           "--from-block" in late.stdout
    above = import_reference(vms_json, "--dry-run", "--from-block", "999999999")
    assert above.returncode == 1 and len(above.stderr.strip().splitlines()) == 1
    assert "above the chain head" in above.stderr
    elsewhere_before = env.sim.vm(100005)

    done = import_reference(vms_json, "--from-block", str(first_block))
    assert done.returncode == 0, done.stderr
    assert f"adopted blockhost-{kept:03d} (vmid 100000, 10.77.0.10) for subscription {kept}, " \
           f"NFT #{kept_token}" in done.stdout
    assert f"NFT #{ending_token}" in done.stdout
    assert "not adopted: blockhost-099 (vmid 100099): Proxmox has no VM at VMID 100099" \
        in done.stdout
    assert env.sim.vm(100000)["pool"] == "blockhost"       # moved in from no pool
    assert f"not adopted: blockhost-{elsewhere:03d} (vmid 100005): Proxmox refused to move it " \
           "into pool blockhost (VM 100005 belongs already to pool 'other' and 'allow-move' " \
           "is not set)" in done.stdout
    # ... and nothing of it was touched: its VM, the inventory, the journal.
    elsewhere_after = env.sim.vm(100005)
    assert (elsewhere_after["pool"], elsewhere_after["config"]) == (
        elsewhere_before["pool"], elsewhere_before["config"])
    assert env.db_rows("SELECT vmid FROM vms ORDER BY vmid") == [(100000,), (100001,)]
    assert env.db_rows("SELECT DISTINCT subscription_id FROM events ORDER BY 1") == [
        (kept,), (ending,)]

    config = yaml.safe_load(env.config_path.read_text())
    config["chain"]["start_block"] = env.w3.eth.block_number   # listen from the current head
    env.config_path.write_text(yaml.safe_dump(config))
    listener = env.start_listener()
    env.wait_for("both imported subscriptions to be active", lambda: all(
        (env.subscription(i) or {}).get("state") == "active" for i in (kept, ending)),
        timeout=120, listener=listener)

    renewed = extend(env.w3, env.user(1), subscription_contract=env.deployment["subscriptions"],
                     subscription_id=kept, days=3).new_expires_at
    env.wait_for("the renewal to reach the NFT", lambda: nft(env).functions.getAccessData(
        kept_token).call()[3] == renewed, timeout=120, listener=listener)
    env.advance_time(DAY + 600)
    env.wait_for("the expired VM to be suspended",
                 lambda: (env.subscription(ending) or {}).get("state") == "suspended"
                 and env.sim.vm(100001)["status"] == "stopped", timeout=120, listener=listener)
    assert env.sim.vm(100000)["status"] == "running"

    fresh_user = env.user(3)
    env.fund(fresh_user)
    fresh = subscribe(env.w3, fresh_user, subscription_contract=env.deployment["subscriptions"],
                      server_public_key=env.server_public_key, plan_id=1,
                      days=5).subscription_id
    row = env.wait_for("a new purchase to be served",
                       lambda: (env.subscription(fresh) or {}).get("state") == "active"
                       and env.subscription(fresh), timeout=120, listener=listener)
    assert (row["vm"]["vmid"], row["vm"]["ip"]) == (100002, "10.77.0.12")

    # Zero clones and zero mints for the imported VMs: only the new purchase got either.
    assert clone_tasks(env) == clones + 1
    assert nft(env).functions.totalSupply().call() == supply + 1
    keys = [r[0] for r in env.db_rows("SELECT idempotency_key FROM tx_requests "
                                      "WHERE kind = 'mint'")]
    assert keys == [f"mint:sub:{fresh}"]
