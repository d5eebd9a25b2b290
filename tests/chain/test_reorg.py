"""Reorgs on a real anvil chain (``anvil_reorg``), followed by the real scanner and store.

Below the confirmation depth a reorg is walked back and the orphaned events vanish before
they ever become facts; above it, effects halt and nothing is destroyed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from listener.chain.contracts import deploy_all, load_artifact, send_transaction
from listener.chain.journal import Store
from listener.chain.prefetch import LogPrefetcher
from listener.chain.ranges import RangeController
from listener.chain.rpc import RpcClient
from listener.chain.scanner import Outcome, find_common_ancestor, scan_once
from listener.config import ChainConfig
from listener.devkit.devchain import DEV_PRIVATE_KEYS, Anvil
from tests.support.anvil_chain import AnvilActions


@dataclass
class Chain(AnvilActions):
    w3: Web3
    url: str
    rpc: RpcClient
    subs_address: str
    user: LocalAccount
    store: Store
    #: "prefetch": scan like the daemon, fetching the next confirmed range ahead.
    mode: str = "direct"
    controller: RangeController | None = None
    prefetch: LogPrefetcher | None = None

    def config(self, confirmations: int) -> ChainConfig:
        return ChainConfig(rpc_urls=[self.url], subscription_contract=self.subs_address,
                           nft_contract=self.subs_address, confirmations=confirmations,
                           max_block_range=50)

    def signed_buy(self, days: int = 2) -> bytes:
        return self.sign_buy(self.subs_address, days)

    def drain(self, config: ChainConfig) -> list[Outcome]:
        """Scan until nothing is left to do; the outcomes seen on the way."""
        seen = []
        if self.mode == "prefetch" and self.prefetch is None:
            self.controller = RangeController.for_listener(config.max_block_range)
            self.prefetch = LogPrefetcher(self.rpc, address=self.subs_address,
                                          controller=self.controller)
        for _ in range(50):
            result = scan_once(self.rpc, self.store, config, self.controller,
                               prefetch=self.prefetch)
            seen.append(result.outcome)
            if result.outcome in (Outcome.NOTHING_NEW, Outcome.HALTED):
                return seen
        raise AssertionError(f"scanner did not settle: {seen[-5:]}")

    def created_events(self) -> list[tuple[int, int, int]]:
        rows = self.store.conn.execute(
            "SELECT subscription_id, block_number, applied FROM events"
            " WHERE name = 'SubscriptionCreated' ORDER BY id")
        return [(r[0], r[1], r[2]) for r in rows]


@pytest.fixture(params=["direct", "prefetch"])
def chain(anvil: Anvil, w3: Web3, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Chain]:
    deployment = deploy_all(w3, DEV_PRIVATE_KEYS[0])
    operator = Account.from_key(DEV_PRIVATE_KEYS[0])
    user = Account.from_key(DEV_PRIVATE_KEYS[1])
    coin = w3.eth.contract(address=deployment.stablecoin,
                           abi=load_artifact("MockStablecoin")["abi"])
    send_transaction(w3, operator, coin.functions.mint(user.address, 10**12))
    send_transaction(w3, user, coin.functions.approve(deployment.subscriptions, 10**12))
    store = Store.open(tmp_path / "chain.db")
    try:
        yield Chain(w3, anvil.url, RpcClient([anvil.url]), deployment.subscriptions, user, store,
                    mode=request.param)
    finally:
        store.close()


def test_reorg_below_depth_drops_an_unconfirmed_subscription(chain: Chain) -> None:
    config = chain.config(confirmations=5)
    chain.drain(config)
    block = chain.send_raw(chain.signed_buy())
    chain.mine(1)
    chain.drain(config)
    # Journaled, but not a fact yet: nothing can act on it.
    assert chain.created_events() == [(1, block, 0)]
    assert chain.store.subscriptions() == []

    chain.reorg(3)  # the purchase's block is replaced by an empty one
    outcomes = chain.drain(config)
    assert Outcome.REORGED in outcomes
    assert chain.created_events() == []
    chain.mine(10)
    chain.drain(config)
    assert chain.store.subscriptions() == []
    assert chain.store.chain_state().halted_reason is None
    assert chain.store.reorg_count() == (1, 0)


def test_reorg_that_moves_a_subscription_to_another_block(chain: Chain) -> None:
    config = chain.config(confirmations=4)
    chain.drain(config)
    raw = chain.signed_buy()
    first_block = chain.send_raw(raw)
    chain.mine(1)
    chain.drain(config)
    assert chain.created_events() == [(1, first_block, 0)]

    chain.reorg(2, [(raw, 1)])  # the same purchase lands one block later
    chain.mine(6)
    outcomes = chain.drain(config)
    assert Outcome.REORGED in outcomes
    events = chain.created_events()
    assert len(events) == 1 and events[0][2] == 1, events
    moved_block = events[0][1]
    assert moved_block != first_block
    [subscription] = chain.store.subscriptions()
    assert (subscription.id, subscription.created_block) == (1, moved_block)


def test_reorg_deeper_than_confirmations_halts_and_keeps_facts(chain: Chain) -> None:
    config = chain.config(confirmations=2)
    chain.drain(config)
    chain.send_raw(chain.signed_buy())
    chain.mine(4)
    chain.drain(config)
    [before] = chain.store.subscriptions()
    applied_before = chain.store.chain_state().applied_block

    chain.reorg(6)  # reaches below the confirmed cursor and removes the purchase
    outcomes = chain.drain(config)
    assert outcomes[-1] is Outcome.HALTED
    state = chain.store.chain_state()
    assert state.halted_reason and "deeper than the confirmation depth" in state.halted_reason
    assert chain.store.reorg_count() == (0, 1)
    # Nothing was retracted or destroyed: the operator decides.
    assert chain.store.subscriptions() == [before]
    assert state.applied_block == applied_before
    chain.mine(3)
    assert chain.drain(config) == [Outcome.HALTED]


def test_a_confirmed_range_is_applied_in_one_step(chain: Chain) -> None:
    """Catching up far behind the head: ranges below the confirmed head apply directly."""
    for _ in range(3):
        chain.send_raw(chain.signed_buy())
    chain.mine(20)
    chain.drain(chain.config(confirmations=5))
    assert [s.id for s in chain.store.subscriptions()] == [1, 2, 3]
    assert all(applied == 1 for _, _, applied in chain.created_events())
    state = chain.store.chain_state()
    head = chain.w3.eth.block_number
    assert state.cursor == head and state.applied_block == head - 5
    assert state.chain_time == chain.w3.eth.get_block(head - 5).timestamp


def test_a_long_catch_up_then_a_reorg_near_the_head(chain: Chain) -> None:
    """Several confirmed ranges in a row (fetched ahead in prefetch mode), then a shallow
    reorg that replaces the newest purchase's block: the older facts stay, the orphaned
    purchase is dropped and the re-mined one is applied once."""
    for _ in range(3):
        chain.send_raw(chain.signed_buy())
        chain.mine(60)
    config = chain.config(confirmations=5)
    chain.drain(config)
    assert [s.id for s in chain.store.subscriptions()] == [1, 2, 3]
    if chain.mode == "prefetch":
        assert chain.prefetch is not None and chain.prefetch.used >= 2

    raw = chain.signed_buy()
    first_block = chain.send_raw(raw)
    chain.mine(1)
    chain.drain(config)
    assert [e[0] for e in chain.created_events()] == [1, 2, 3, 4]
    chain.reorg(2, [(raw, 1)])  # the purchase moves one block later
    chain.mine(100)
    assert Outcome.REORGED in chain.drain(config)
    events = chain.created_events()
    assert [(e[0], e[2]) for e in events] == [(1, 1), (2, 1), (3, 1), (4, 1)]
    assert events[-1][1] != first_block
    assert [s.id for s in chain.store.subscriptions()] == [1, 2, 3, 4]
    assert chain.store.reorg_count() == (1, 0)


def test_finalized_tag_counts_as_the_confirmed_head(chain: Chain) -> None:
    chain.send_raw(chain.signed_buy())
    chain.mine(3)
    config = chain.config(confirmations=0).model_copy(update={"confirmations": "finalized"})
    chain.drain(config)
    finalized = int(chain.w3.eth.get_block("finalized").number)
    assert chain.store.chain_state().applied_block == finalized


class TestCommonAncestor:
    WINDOW: ClassVar[list[tuple[int, str]]] = [(10, "0xa10"), (8, "0xa8"), (5, "0xa5"), (1, "0xa1")]

    def test_newest_match_wins(self) -> None:
        canonical = {10: "0xb10", 8: "0xa8", 5: "0xa5", 1: "0xa1"}
        assert find_common_ancestor(self.WINDOW, canonical.get) == (8, "0xa8")

    def test_missing_blocks_are_not_matches(self) -> None:
        canonical = {5: "0xa5", 1: "0xa1"}  # a shorter fork
        assert find_common_ancestor(self.WINDOW, canonical.get) == (5, "0xa5")

    def test_no_match_at_all(self) -> None:
        assert find_common_ancestor(self.WINDOW, lambda _n: "0xother") is None
        assert find_common_ancestor([], lambda _n: "0xother") is None
