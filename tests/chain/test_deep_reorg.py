"""Accepting the canonical chain after a deep reorg, on a real anvil chain (``anvil_reorg``),
with the real scanner and store: the orphaned facts are retracted, the canonical ones journaled
in their place, the halt cleared, and following resumes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from listener.chain.contracts import deploy_all, load_artifact, send_transaction
from listener.chain.deep_reorg import accept_canonical, inspect_fork
from listener.chain.journal import Store, Subscription
from listener.chain.retraction import ForkAccepted
from listener.chain.rpc import RpcClient
from listener.chain.scanner import Outcome, scan_once
from listener.config import ChainConfig
from listener.devkit.devchain import DEV_PRIVATE_KEYS, Anvil
from listener.errors import UserError
from tests.support.anvil_chain import AnvilActions


@dataclass
class Chain(AnvilActions):
    w3: Web3
    rpc: RpcClient
    config: ChainConfig
    user: LocalAccount
    store: Store
    #: the subscription's facts before the reorg
    bought: Subscription | None = None
    #: the timestamp of the block that held the purchase before the reorg
    bought_at: int = 0

    def signed_buy(self) -> bytes:
        return self.sign_buy(self.config.subscription_contract)

    def drain(self) -> list[Outcome]:
        seen = []
        for _ in range(50):
            seen.append(scan_once(self.rpc, self.store, self.config).outcome)
            if seen[-1] in (Outcome.NOTHING_NEW, Outcome.HALTED):
                return seen
        raise AssertionError(f"scanner did not settle: {seen[-5:]}")

    def halted_after_deep_reorg(self, *, mined_again: bool) -> int:
        """Buy, let it become a fact, then replace the blocks from the one before it (deeper
        than the confirmations), with the purchase mined again one block later or gone;
        returns the purchase's original block."""
        self.mine(5)
        raw = self.signed_buy()
        block = self.send_raw(raw)
        self.mine(4)
        self.drain()
        [self.bought] = self.store.subscriptions()
        self.bought_at = self.w3.eth.get_block(block).timestamp
        # the new blocks start at block - 1: offset 2 is block + 1
        self.reorg(self.w3.eth.block_number - block + 2, [(raw, 2)] if mined_again else [])
        assert self.drain()[-1] is Outcome.HALTED
        return block


@pytest.fixture
def chain(anvil: Anvil, w3: Web3, tmp_path: Path) -> Iterator[Chain]:
    deployment = deploy_all(w3, DEV_PRIVATE_KEYS[0])
    operator = Account.from_key(DEV_PRIVATE_KEYS[0])
    user = Account.from_key(DEV_PRIVATE_KEYS[1])
    coin = w3.eth.contract(address=deployment.stablecoin,
                           abi=load_artifact("MockStablecoin")["abi"])
    send_transaction(w3, operator, coin.functions.mint(user.address, 10**12))
    send_transaction(w3, user, coin.functions.approve(deployment.subscriptions, 10**12))
    config = ChainConfig(rpc_urls=[anvil.url], subscription_contract=deployment.subscriptions,
                         nft_contract=deployment.subscriptions, confirmations=2,
                         max_block_range=50)
    store = Store.open(tmp_path / "chain.db")
    try:
        built = Chain(w3, RpcClient([anvil.url]), config, user, store)
        built.drain()
        yield built
    finally:
        store.close()


def test_a_purchase_mined_again_keeps_its_facts(chain: Chain) -> None:
    block = chain.halted_after_deep_reorg(mined_again=True)
    before = chain.bought
    assert before is not None
    fork = inspect_fork(chain.rpc, chain.store, chain.config)
    assert fork.halted and "deeper than the confirmation depth" in fork.halted
    assert fork.ancestor < block and fork.affected_subscriptions == [1]
    assert fork.orphaned_events == 1
    assert fork.ancestor_hash == chain.w3.eth.get_block(fork.ancestor).hash.to_0x_hex()
    stored = {b.number: b for b in fork.orphaned_blocks}
    assert stored[block].canonical_hash != stored[block].stored_hash

    accepted = accept_canonical(chain.rpc, chain.store, chain.config, fork)
    assert accepted == ForkAccepted(retracted_events=1, journaled_events=1, rederived=[1],
                                    unpurchased=[])
    [after] = chain.store.subscriptions()
    assert after.created_block == block + 1
    # the expiry counts from the purchase's block, whose timestamp anvil may have changed
    mined_at = chain.w3.eth.get_block(block + 1).timestamp
    assert after.subscriber == before.subscriber
    assert after.expires_at - mined_at == before.expires_at - chain.bought_at
    state = chain.store.chain_state()
    assert state.halted_reason is None
    assert state.cursor == state.applied_block == fork.confirmed_head
    chain.mine(3)
    assert Outcome.HALTED not in chain.drain()
    assert chain.store.reorg_count() == (0, 1)


def test_a_purchase_gone_from_the_chain_ends_at_the_fork(chain: Chain) -> None:
    chain.halted_after_deep_reorg(mined_again=False)
    fork = inspect_fork(chain.rpc, chain.store, chain.config)
    accepted = accept_canonical(chain.rpc, chain.store, chain.config, fork)
    assert accepted == ForkAccepted(retracted_events=1, journaled_events=0, rederived=[1],
                                    unpurchased=[1])
    [sub] = chain.store.subscriptions()
    assert sub.expires_at == fork.ancestor_time
    assert chain.store.chain_state().halted_reason is None
    assert chain.drain()[-1] is Outcome.NOTHING_NEW


def test_nothing_to_accept_without_a_halt(chain: Chain) -> None:
    fork = inspect_fork(chain.rpc, chain.store, chain.config)
    assert fork.halted is None and fork.orphaned_events == 0 and fork.orphaned_blocks == []
    with pytest.raises(UserError, match="not halted"):
        accept_canonical(chain.rpc, chain.store, chain.config, fork)
