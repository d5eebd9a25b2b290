"""``blockhost replay`` on a real anvil chain: gaps are filled, replays of handled ranges are no-ops."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from eth_account import Account
from web3 import Web3

from listener.chain.contracts import deploy_all, load_artifact, send_transaction
from listener.chain.journal import Store
from listener.chain.replay import plan_range, replay
from listener.chain.rpc import LogBatch, RpcClient
from listener.chain.scanner import Outcome, scan_once
from listener.config import ChainConfig
from listener.devkit.devchain import DEV_PRIVATE_KEYS, Anvil
from listener.errors import UserError
from tests.support.paths import REPO_ROOT


class LossyNode(RpcClient):
    """A node that silently omits the logs of some transactions (as buggy providers do)."""

    def __init__(self, url: str, hide_tx: set[str]) -> None:
        super().__init__([url])
        self.hide_tx = hide_tx

    def fetch_logs_once(self, from_block: int, to_block: int, **kwargs: Any) -> LogBatch:
        batch = super().fetch_logs_once(from_block, to_block, **kwargs)
        kept = [e for e in batch.logs if e["transactionHash"].lower() not in self.hide_tx]
        return replace(batch, logs=kept)


@dataclass
class History:
    url: str
    subs: str
    nft: str
    hidden: set[str]
    extended_to: int
    chain_id: int


def _tx_hash(receipt: Any) -> str:
    return "0x" + bytes(receipt["transactionHash"]).hex()


@pytest.fixture
def history(anvil: Anvil, w3: Web3) -> History:
    """Three purchases, an extension and a cancellation; two of them hidden from the listener."""
    deployment = deploy_all(w3, DEV_PRIVATE_KEYS[0])
    operator = Account.from_key(DEV_PRIVATE_KEYS[0])
    user = Account.from_key(DEV_PRIVATE_KEYS[1])
    coin = w3.eth.contract(address=deployment.stablecoin, abi=load_artifact("MockStablecoin")["abi"])
    subs = w3.eth.contract(address=deployment.subscriptions,
                           abi=load_artifact("BlockhostSubscriptions")["abi"])
    send_transaction(w3, operator, coin.functions.mint(user.address, 10**12))
    send_transaction(w3, user, coin.functions.approve(subs.address, 10**12))
    for _ in range(3):
        send_transaction(w3, user, subs.functions.buySubscription(1, 2, 1, b"x"))
    extension = send_transaction(w3, user, subs.functions.extendSubscription(1, 5, 1))
    hidden_buy = send_transaction(w3, user, subs.functions.buySubscription(1, 1, 1, b"y"))
    send_transaction(w3, operator, subs.functions.cancelSubscription(2))
    w3.provider.make_request("anvil_mine", [hex(10)])
    return History(anvil.url, deployment.subscriptions, deployment.nft,
                   {_tx_hash(extension), _tx_hash(hidden_buy)},
                   subs.functions.getSubscription(1).call()[2], deployment.chain_id)


def follow(store: Store, rpc: RpcClient, config: ChainConfig) -> None:
    for _ in range(50):
        if scan_once(rpc, store, config).outcome is Outcome.NOTHING_NEW:
            return
    raise AssertionError("scanner did not settle")


def dump(store: Store) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    events = store.conn.execute("SELECT block_hash, log_index, name, applied, rejected FROM events"
                                " ORDER BY block_number, log_index").fetchall()
    subs = store.conn.execute("SELECT id, plan_id, expires_at, cancelled, cancelled_at"
                              " FROM subscriptions ORDER BY id").fetchall()
    return [tuple(r) for r in events], [tuple(r) for r in subs]


@pytest.fixture
def gappy_store(history: History, tmp_path: Path) -> Iterator[tuple[Store, ChainConfig]]:
    config = ChainConfig(rpc_urls=[history.url], subscription_contract=history.subs,
                         nft_contract=history.nft, confirmations=2, max_block_range=7)
    store = Store.open(tmp_path / "blockhost.db")
    follow(store, LossyNode(history.url, history.hidden), config)
    try:
        yield store, config
    finally:
        store.close()


def test_replay_fills_gaps_then_changes_nothing(history: History,
                                                gappy_store: tuple[Store, ChainConfig]) -> None:
    store, config = gappy_store
    assert [s.id for s in store.subscriptions()] == [1, 2, 3]  # #4 was hidden
    before = dump(store)
    first, last = plan_range(store, 0, None)
    rpc = RpcClient([history.url])

    preview = replay(rpc, store, config, first, last, dry_run=True)
    assert (preview.missing, preview.added, preview.conflicts) == (2, 0, 0)
    assert {c["event"] for c in preview.changes} == {"SubscriptionExtended", "SubscriptionCreated"}
    assert dump(store) == before  # a dry run writes nothing

    done = replay(rpc, store, config, first, last, dry_run=False)
    assert (done.missing, done.added) == (2, 2)
    subs = {s.id: s for s in store.subscriptions()}
    assert sorted(subs) == [1, 2, 3, 4]
    assert subs[1].expires_at == history.extended_to  # the late extension was folded in
    assert subs[2].cancelled and subs[2].cancelled_at is not None  # kept through the refold

    after = dump(store)
    again = replay(rpc, store, config, first, last, dry_run=False)
    assert (again.missing, again.added, again.already_journaled) == (0, 0, again.events_seen)
    assert dump(store) == after


def test_range_checks(gappy_store: tuple[Store, ChainConfig]) -> None:
    store, _ = gappy_store
    confirmed = store.chain_state().applied_block
    assert confirmed is not None
    with pytest.raises(UserError, match="above the confirmed cursor"):
        plan_range(store, 0, confirmed + 1)
    with pytest.raises(UserError, match="empty block range"):
        plan_range(store, 10, 5)
    assert plan_range(store, 3, None) == (3, confirmed)


def test_replay_command_prints_one_json_report(history: History, tmp_path: Path,
                                               gappy_store: tuple[Store, ChainConfig]) -> None:
    store, _ = gappy_store
    config_path = tmp_path / "blockhost.yaml"
    config_path.write_text(yaml.safe_dump({
        "chain": {"rpc_urls": [history.url], "chain_id": history.chain_id,
                  "subscription_contract": history.subs, "nft_contract": history.nft,
                  "max_block_range": 5},
        "db": {"path": str(store.path)},
    }))
    command = [sys.executable, "-m", "listener.cli", "--config", str(config_path), "replay",
               "--from-block", "0"]
    dry = subprocess.run([*command, "--dry-run"], capture_output=True, text=True, timeout=120,
                         cwd=REPO_ROOT, stdin=subprocess.DEVNULL)
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert report["dry_run"] and report["missing"] == 2 and report["added"] == 0
    assert "replay.progress" in dry.stderr  # not a TTY: structured progress logs

    real = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
                          stdin=subprocess.DEVNULL)
    assert real.returncode == 0, real.stderr
    assert json.loads(real.stdout)["added"] == 2

    bad = subprocess.run([*command[:-2], "--from-block", "5", "--to-block", "1"],
                         capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert bad.returncode == 1
    assert bad.stderr.strip().count("\n") == 0 and "empty block range" in bad.stderr
