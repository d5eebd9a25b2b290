"""End to end on a real anvil chain and the PVE simulator, with the real daemon process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import requests

from listener.chain.contracts import load_artifact
from listener.crypto.credentials import ConnectionDetails
from listener.devkit.devenv import DevEnv, sim_vm
from listener.userkit.subscriber import credentials, subscribe
from tests.support.paths import REPO_ROOT


@pytest.fixture
def env(dev_env: DevEnv) -> DevEnv:
    return dev_env


def buy(env: DevEnv, user_index: int, days: int = 5, legacy: bool = False) -> int:
    user = env.user(user_index)
    return subscribe(env.w3, user, subscription_contract=env.deployment["subscriptions"],
                     server_public_key=env.server_public_key, plan_id=1, days=days,
                     legacy=legacy).subscription_id


def test_listener_killed_midway_loses_nothing_and_doubles_nothing(env: DevEnv) -> None:
    """SIGKILL the daemon while subscriptions stream in; after a restart all are served once."""
    for index in (1, 2, 3):
        env.fund(env.user(index))
    first = [buy(env, 1), buy(env, 2, legacy=True), buy(env, 3)]
    listener = env.start_listener()
    env.wait_for("the first subscription to be journaled",
                 lambda: env.db_path.exists() and env.status()["events"] > 0, listener=listener)
    env.kill_listener(listener)
    # While the daemon is down: more payments, and the chain moves on.
    later = [buy(env, 1), buy(env, 2)]
    env.mine(5)
    listener = env.start_listener()
    all_ids = first + later
    env.wait_for("every subscription to be active",
                 lambda: all((env.subscription(i) or {}).get("state") == "active" for i in all_ids),
                 timeout=120, listener=listener)

    status = env.status()
    subs = {s["id"]: s for s in status["subscriptions"]}
    assert sorted(subs) == sorted(all_ids)
    # Every journaled event is unique and covers every purchase exactly once.
    created = env.db_rows("SELECT subscription_id FROM events WHERE name = 'SubscriptionCreated'")
    assert sorted(r[0] for r in created) == sorted(all_ids)
    # One VM per subscription, distinct VMIDs and IPs, all running on the simulator.
    vmids = [subs[i]["vm"]["vmid"] for i in all_ids]
    ips = [subs[i]["vm"]["ip"] for i in all_ids]
    assert len(set(vmids)) == len(vmids) and len(set(ips)) == len(ips)
    for vmid in vmids:
        found = sim_vm(env.sim, vmid)
        assert found is not None and found["status"] == "running"
    managed = [vm for vm in env.sim.state()["vms"] if vm.get("pool") == "blockhost"]
    assert len(managed) == len(all_ids)
    # Exactly one NFT per subscription, owned by the payer, with ids from receipts.
    nft = env.w3.eth.contract(address=env.deployment["nft"],
                              abi=load_artifact("AccessCredentialNFT")["abi"])
    assert nft.functions.totalSupply().call() == len(all_ids)
    tokens = {subs[i]["nft"]["token_id"] for i in all_ids}
    assert tokens == set(range(len(all_ids)))
    for sub_id in all_ids:
        owner = nft.functions.ownerOf(subs[sub_id]["nft"]["token_id"]).call()
        assert owner == subs[sub_id]["subscriber"]
    # The daemon's own health and metrics agree (served on metrics.listen).
    url = env.observability_url()
    assert url is not None
    health = requests.get(f"{url}/healthz", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok", health.text
    metrics = env.wait_for("metrics to show every subscription active", lambda: (
        text if f'blockhost_subscriptions{{state="active"}} {float(len(all_ids))}' in
        (text := requests.get(f"{url}/metrics", timeout=10).text) else None), listener=listener)
    assert 'blockhost_dead_letters 0.0' in metrics
    # The subscriber can read their connection details back from the NFT.
    sub = subs[first[0]]
    details = credentials(env.w3, env.user(1), nft_contract=env.deployment["nft"],
                          token_id=sub["nft"]["token_id"])
    assert details == ConnectionDetails(hostname=sub["vm"]["ip"], port=22, username="admin")
    # Legacy plaintext (bare signature over the default public secret) works too.
    legacy = subs[first[1]]
    details = credentials(env.w3, env.user(2), nft_contract=env.deployment["nft"],
                          token_id=legacy["nft"]["token_id"])
    assert details.hostname == legacy["vm"]["ip"]


def test_garbage_user_encrypted_still_provisions(env: DevEnv) -> None:
    """The user paid: a VM and an NFT without credentials, and the reason is shown."""
    from listener.chain.contracts import send_transaction

    user = env.user(1)
    env.fund(user)
    subs = env.w3.eth.contract(address=env.deployment["subscriptions"],
                               abi=load_artifact("BlockhostSubscriptions")["abi"])
    coin = env.w3.eth.contract(address=env.deployment["stablecoin"],
                               abi=load_artifact("MockStablecoin")["abi"])
    send_transaction(env.w3, user, coin.functions.approve(subs.address, 10**12))
    send_transaction(env.w3, user, subs.functions.buySubscription(1, 2, 1, b"\x00garbage" * 20))
    listener = env.start_listener()
    row = env.wait_for("the VM", lambda: (env.subscription(1) or {}).get("state") == "active"
                       and env.subscription(1), listener=listener)
    assert row["nft"]["token_id"] == 0
    assert "credentials not encrypted" in row["nft"]["note"]
    nft = env.w3.eth.contract(address=env.deployment["nft"],
                              abi=load_artifact("AccessCredentialNFT")["abi"])
    assert nft.functions.getAccessData(0).call()[0] == b""


def test_no_secrets_in_logs_or_database(env: DevEnv) -> None:
    user = env.user(1)
    env.fund(user)
    buy(env, 1)
    listener = env.start_listener()
    env.wait_for("the VM", lambda: (env.subscription(1) or {}).get("state") == "active",
                 listener=listener)
    env.close()
    from listener.crypto.key_files import load_private_key
    from listener.devkit.devchain import DEV_PRIVATE_KEYS

    server_key = load_private_key(env.workdir / "server.key").hex()
    secrets = [k.removeprefix("0x") for k in DEV_PRIVATE_KEYS[:2]] + [server_key,
                                                                       env.sim.token_secret]
    files = [env.listener_log, env.db_path, env.db_path.with_name(env.db_path.name + "-wal")]
    haystacks = [f.read_bytes().lower() for f in files if f.exists()]
    assert len(haystacks) >= 2
    for secret in secrets:
        for hay in haystacks:
            assert secret.lower().encode() not in hay


@pytest.mark.slow
def test_demo_command_runs_end_to_end(tmp_path: Path) -> None:
    """`blockhost demo` exits 0 and its timeline shows every step."""
    proc = subprocess.run([sys.executable, "-m", "listener.cli", "demo", "--workdir",
                           str(tmp_path / "demo")], capture_output=True, text=True, timeout=300,
                          cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout
    for needle in ("contracts deployed", "listener started", "bought subscription",
                   "minted to the subscriber", "running: vmid", "decrypted the credentials",
                   "suspended", "destroyed", "demo finished"):
        assert needle in out, needle
