"""Rebuild from the truth (issue 14), with the real daemon as a subprocess, on anvil and the PVE
simulator: a database restored from an old backup, and one deleted outright, are repaired
from Proxmox and the chain. After the restart: no second VM, no second mint, no VMID or address
handed out twice, and every subscription in its right state (renewals included)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from listener.chain.contracts import load_abi
from listener.devkit.devenv import DevEnv
from listener.userkit.subscriber import extend, subscribe
from tests.support.cli import run_blockhost

pytestmark = pytest.mark.slow


@pytest.fixture
def env(dev_env: DevEnv) -> DevEnv:
    return dev_env


def buy(env: DevEnv, user_index: int, days: int = 5) -> int:
    env.fund(env.user(user_index))
    return subscribe(env.w3, env.user(user_index),
                     subscription_contract=env.deployment["subscriptions"],
                     server_public_key=env.server_public_key, plan_id=1,
                     days=days).subscription_id


def renew(env: DevEnv, user_index: int, subscription_id: int) -> int:
    return extend(env.w3, env.user(user_index),
                  subscription_contract=env.deployment["subscriptions"],
                  subscription_id=subscription_id, days=3).new_expires_at


def nft(env: DevEnv) -> Any:
    return env.w3.eth.contract(address=env.deployment["nft"],
                               abi=load_abi("AccessCredentialNFT"))


def served(env: DevEnv, expiries: dict[int, int]) -> bool:
    """Every subscription active with its VM running and its NFT carrying its expiry."""
    for sub_id, expires_at in expiries.items():
        row = env.subscription(sub_id)
        if not row or row["state"] != "active" or row["nft"] is None:
            return False
        if row["nft"]["token_id"] is None or row["nft"]["expires_at"] != expires_at:
            return False
    return True


def wait_served(env: DevEnv, expiries: dict[int, int], listener: Any) -> None:
    env.wait_for("every subscription to be served", lambda: served(env, expiries),
                 timeout=180, listener=listener)


def expiry(env: DevEnv, sub_id: int) -> int:
    return int(env.w3.eth.contract(
        address=env.deployment["subscriptions"], abi=load_abi("BlockhostSubscriptions"),
    ).functions.getSubscription(sub_id).call()[2])


def assert_one_of_everything(env: DevEnv, expiries: dict[int, int]) -> None:
    """One VM and one NFT per subscription; no VMID or address twice, on Proxmox or in the
    database; each NFT carries its subscription's expiry."""
    pool = [vm for vm in env.sim.state()["vms"] if vm.get("pool") == "blockhost"]
    assert sorted(vm["name"] for vm in pool) == sorted(f"blockhost-{i:03d}" for i in expiries)
    addresses = [vm["config"].get("ipconfig0") for vm in pool]
    assert len(set(addresses)) == len(pool), addresses
    assert nft(env).functions.totalSupply().call() == len(expiries)
    rows = env.db_rows("SELECT subscription_id, vmid, ipv4 FROM vms WHERE state != 'destroyed'")
    assert sorted(r[0] for r in rows) == sorted(expiries)
    assert sorted(r[1] for r in rows) == sorted(int(vm["vmid"]) for vm in pool)
    assert len({r[2] for r in rows}) == len(rows)
    tokens = {}
    for sub_id, expires_at in expiries.items():
        row = env.subscription(sub_id)
        assert row is not None and row["state"] == "active"
        token = row["nft"]["token_id"]
        assert nft(env).functions.getAccessData(token).call()[3] == expires_at
        tokens[sub_id] = token
    assert len(set(tokens.values())) == len(tokens)


def remove_database(env: DevEnv) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{env.db_path}{suffix}").unlink(missing_ok=True)


def test_a_restored_old_backup_is_repaired_at_start(env: DevEnv, tmp_path: Path) -> None:
    listener = env.start_listener()
    first, second = buy(env, 1), buy(env, 2)
    wait_served(env, {first: expiry(env, first), second: expiry(env, second)}, listener)
    backup = tmp_path / "t1.db"
    done = run_blockhost(env.config_path, "backup", "--out", str(backup))
    assert done.returncode == 0, done.stderr

    third = buy(env, 3)                       # after the backup: a VM and an NFT it never saw
    renewed = renew(env, 1, first)            # and a renewal whose NFT update it never saw
    expiries = {first: renewed, second: expiry(env, second), third: expiry(env, third)}
    wait_served(env, expiries, listener)
    env.kill_listener(listener)

    remove_database(env)
    shutil.copyfile(backup, env.db_path)
    assert env.db_rows("SELECT COUNT(*) FROM vms")[0][0] == 2   # the backup forgot the third

    listener = env.start_listener()
    wait_served(env, expiries, listener)
    assert_one_of_everything(env, expiries)
    # the start-up repair adopted it and found its NFT (before any allocation could collide)
    log_text = env.listener_log.read_text()
    assert f"adopt blockhost-{third:03d}" in log_text
    assert f"(found on chain) for subscription {third}" in log_text
    keys = {r[0] for r in env.db_rows("SELECT idempotency_key FROM tx_requests")}
    assert f"mint:sub:{third}" not in keys    # found on chain, not sent again

    fourth = buy(env, 2)                      # new business gets ids nobody holds
    expiries[fourth] = expiry(env, fourth)
    wait_served(env, expiries, listener)
    assert_one_of_everything(env, expiries)


def test_a_deleted_database_is_rebuilt_by_recover(env: DevEnv) -> None:
    listener = env.start_listener()
    first, second = buy(env, 1), buy(env, 2)
    renewed = renew(env, 2, second)
    expiries = {first: expiry(env, first), second: renewed}
    wait_served(env, expiries, listener)
    env.kill_listener(listener)
    remove_database(env)

    dry = run_blockhost(env.config_path, "recover", "--dry-run")
    assert dry.returncode == 1 and len(dry.stderr.strip().splitlines()) == 1
    assert "does not exist" in dry.stderr and not env.db_path.exists()

    done = run_blockhost(env.config_path, "recover")
    assert done.returncode == 0, done.stderr
    for sub_id in expiries:
        assert f"adopt blockhost-{sub_id:03d}" in done.stdout
        assert f"for subscription {sub_id}" in done.stdout
    again = run_blockhost(env.config_path, "recover", "--dry-run")
    assert again.returncode == 0, again.stderr
    assert "adopt" not in again.stdout and "record NFT" not in again.stdout

    listener = env.start_listener()
    wait_served(env, expiries, listener)
    assert_one_of_everything(env, expiries)
    assert env.db_rows("SELECT COUNT(*) FROM tx_requests WHERE kind = 'mint'")[0][0] == 0

    third = buy(env, 3)
    expiries[third] = expiry(env, third)
    wait_served(env, expiries, listener)
    assert_one_of_everything(env, expiries)


def test_the_catch_up_of_a_lost_database_reports_progress_per_range(env: DevEnv) -> None:
    """The start-up repair journals every confirmed block above the cursor before it looks
    up NFTs; on a lost database that can be long, so it reports each range (the daemon feeds
    its watchdog there, and the start gate does not run under TimeoutStartSec)."""
    from listener.chain.rpc import RpcClient
    from listener.config import load_config
    from listener.reconcile.recovery import recover
    from listener.runtime.wiring import build_services

    listener = env.start_listener()
    first = buy(env, 1)
    wait_served(env, {first: expiry(env, first)}, listener)
    env.kill_listener(listener)
    remove_database(env)

    config = load_config(env.config_path, environ={}, broker_allocation=None)
    services = build_services(config)
    ranges: list[str] = []
    try:
        rpc = RpcClient(config.chain.rpc_urls, expected_chain_id=config.chain.chain_id)
        services.store.bind_chain(rpc.chain_id())
        report = recover(services, rpc, dry_run=False, on_progress=lambda: ranges.append("r"))
    finally:
        services.store.close()
    assert report.journal and report.journal.get("added")
    assert ranges  # called once per journaled range
