"""`blockhost reorg show|accept` after a reorg deeper than the confirmations, with the real
daemon, anvil and the PVE simulator, every command a real process.

The daemon serves a subscription (VM and NFT), then the chain replaces the blocks from just
before the purchase on: the same transactions (approval, purchase, the daemon's mint) land one
block later, with new hashes. The daemon halts. `accept` refuses while the daemon holds the
database; once it is stopped, the canonical chain is accepted; the daemon restarted serves a
new purchase, and the first subscription still has one VM and one NFT.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from listener.chain.contracts import load_abi
from listener.devkit.devenv import DevEnv, sim_vm, start_dev_env
from listener.userkit.subscriber import subscribe
from tests.support.chain import json_rpc
from tests.support.paths import REPO_ROOT

pytestmark = pytest.mark.slow


@pytest.fixture
def env(tmp_path: Path) -> Iterator[DevEnv]:
    dev = start_dev_env(tmp_path / "dev", confirmations=2, grace_days=1, clone_seconds=0.2)
    try:
        yield dev
    finally:
        dev.close()


def blockhost(env: DevEnv, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "listener.cli", "--config", str(env.config_path), *argv],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})


def buy(env: DevEnv, user_index: int) -> tuple[int, int]:
    """(subscription id, block) of a 3-day purchase by dev account ``user_index``."""
    env.fund(env.user(user_index))
    result = subscribe(env.w3, env.user(user_index),
                       subscription_contract=env.deployment["subscriptions"],
                       server_public_key=env.server_public_key, plan_id=1, days=3)
    return result.subscription_id, result.block_number


def served(env: DevEnv, sub_id: int) -> Any:
    row = env.subscription(sub_id)
    return row if row and row["state"] == "active" and row["nft"]["state"] == "minted" else None


def mine_again_one_block_later(env: DevEnv, first: int) -> int:
    """Replace blocks ``first``..head with as many new ones, every transaction they held
    going into the second of them; returns the depth."""
    head = env.w3.eth.block_number
    raws = [json_rpc(env.anvil.url, "eth_getRawTransactionByHash", tx.to_0x_hex())
            for number in range(first, head + 1)
            for tx in env.w3.eth.get_block(number).transactions]
    depth = head - first + 1
    json_rpc(env.anvil.url, "anvil_reorg", depth, [[raw, 1] for raw in raws])
    return depth


def test_accept_after_a_deep_reorg_resumes_without_doubling(env: DevEnv) -> None:
    listener = env.start_listener()
    env.mine(3)
    first, bought_at = buy(env, 1)
    before = env.wait_for("the first subscription to be served", lambda: served(env, first),
                          timeout=120, listener=listener)
    env.mine(3)
    # the approval sits in the block before the purchase; the daemon's mint after it
    assert mine_again_one_block_later(env, bought_at - 1) > 2
    env.wait_for("the daemon to halt", lambda: env.status()["chain"]["halted"], timeout=60,
                 listener=listener)

    refused = blockhost(env, "reorg", "accept", "--yes")
    assert refused.returncode == 1, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert "stop the listener" in refused.stderr
    shown = blockhost(env, "reorg", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    fork = json.loads(shown.stdout)
    assert "deeper than the confirmation depth" in fork["halted"]
    assert fork["affected_subscriptions"] == [first] and fork["ancestor"] < bought_at
    assert all(b["stored_hash"] != b["canonical_hash"] for b in fork["orphaned_blocks"])
    text = blockhost(env, "reorg", "show").stdout
    assert text.startswith("HALTED: ") and f"affected subscriptions: #{first}\n" in text

    listener.terminate()
    assert listener.wait(timeout=30) == 0
    dry = blockhost(env, "reorg", "accept")
    assert dry.returncode == 0 and "dry run" in dry.stdout, dry.stderr
    assert env.status()["chain"]["halted"]
    accepted = blockhost(env, "reorg", "accept", "--yes", "--json")
    assert accepted.returncode == 0, accepted.stderr
    changes = json.loads(accepted.stdout)["accepted"]
    assert (changes["rederived"], changes["unpurchased"]) == ([first], [])
    assert changes["retracted_events"] == changes["journaled_events"] == 1
    assert env.status()["chain"]["halted"] is None
    again = blockhost(env, "reorg", "accept", "--yes")
    assert again.returncode == 1 and "nothing to accept" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1

    listener = env.start_listener()
    second, _ = buy(env, 2)
    env.wait_for("a new purchase to be served", lambda: served(env, second), timeout=120,
                 listener=listener)
    after = served(env, first)
    assert after is not None and after["vm"] == before["vm"] and after["nft"] == before["nft"]
    assert sorted(r[0] for r in env.db_rows("SELECT subscription_id FROM vms")) == [first, second]
    assert sorted(r[0] for r in env.db_rows("SELECT idempotency_key FROM tx_requests")) == \
        [f"mint:sub:{first}", f"mint:sub:{second}"]
    nft = env.w3.eth.contract(address=env.deployment["nft"], abi=load_abi("AccessCredentialNFT"))
    assert nft.functions.totalSupply().call() == 2
    pool = [vm for vm in env.sim.state()["vms"] if vm.get("pool") == "blockhost"]
    assert len(pool) == 2 and sim_vm(env.sim, before["vm"]["vmid"]) is not None
    assert env.status()["dead_letters"] == 0
