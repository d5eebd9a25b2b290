"""A load-balanced RPC whose slow backend has not seen the newest blocks yet.

The fault proxy answers the nonce and the head from the live anvil, but receipts, transaction
lookups, logs and calls from a view that is ``STALE`` seconds behind it. So right after our
mint is mined the nonce says "used" while the receipt and the NFT's CredentialMinted logs say
"nothing happened". The real mint path (NftMinter over TxManager, on a real contract) must
mint exactly once; the count comes from the live node's logs, not from anything we stored.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account
from web3 import Web3

from listener.chain.contracts import deploy_contract
from listener.devkit.devchain import DEV_PRIVATE_KEYS, Anvil
from listener.devkit.fault_proxy import RpcProxy
from listener.writeback.fees import GWEI, FeePolicy
from listener.writeback.nft import CREDENTIAL_MINTED_TOPIC, MintRequest, NftMinter, mint_key
from listener.writeback.tx_store import TxStore
from listener.writeback.txmanager import TxManager

OWNER, ALICE = (Account.from_key(k) for k in DEV_PRIVATE_KEYS[:2])
#: How long a new block stays invisible to receipts and logs (the slow backend's lag).
STALE = 2.0


def live(anvil: Anvil) -> Web3:
    return Web3(Web3.HTTPProvider(anvil.url, request_kwargs={"timeout": 30}))


def minted_to_alice(w3: Web3, nft: str) -> list[int]:
    """Token ids of every CredentialMinted log to ALICE, read from the live node."""
    logs = w3.eth.get_logs({"address": Web3.to_checksum_address(nft), "fromBlock": 0,
                            "toBlock": "latest",
                            "topics": [CREDENTIAL_MINTED_TOPIC, None,
                                       "0x" + "00" * 12 + ALICE.address[2:].lower()]})
    return [int(bytes(entry["topics"][1]).hex(), 16) for entry in logs]


def mint_request() -> MintRequest:
    return MintRequest(to=ALICE.address, user_encrypted=b"\x01\x02",
                       public_secret=f"libpam-web3:{ALICE.address}:n1", description="d",
                       image_uri="", animation_url_base64="", expires_at=2_000_000_000)


def manager(url: str, db: Path, confirmations: int) -> TxManager:
    return TxManager(Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 30})),
                     TxStore.open(db), OWNER, fees=FeePolicy.from_gwei(500, 1),
                     confirmations=confirmations, bump_after_blocks=1000,
                     receipt_timeout=60.0, poll_interval=0.05)


@pytest.fixture
def blocks_keep_coming(anvil: Anvil) -> Iterator[None]:
    """Mine an empty block every 0.2 s on the live node, like a real chain."""
    stop = threading.Event()
    w3 = live(anvil)

    def mine() -> None:
        while not stop.wait(0.2):
            w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]  # anvil-only method

    thread = threading.Thread(target=mine, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=5)


@pytest.mark.usefixtures("blocks_keep_coming")
@pytest.mark.parametrize("confirmations", [0, 2])
def test_a_lagging_receipt_backend_mints_once(anvil: Anvil, tmp_path: Path,
                                              confirmations: int) -> None:
    nft, _ = deploy_contract(live(anvil), OWNER, "AccessCredentialNFT", "Access", "BHA", "")
    with RpcProxy(anvil.url, stale_reads=STALE) as proxy:
        txm = manager(proxy.url, tmp_path / "tx.db", confirmations)
        token = NftMinter(txm, nft).mint_for_subscription(7, mint_request())
    # the lag was real: the receipt of our mined mint was hidden at least once
    assert proxy.faults["stale:eth_getTransactionReceipt"] >= 1
    assert minted_to_alice(live(anvil), nft) == [token]
    stored = txm.store.get(mint_key(7))
    assert stored is not None and stored.state == "confirmed"
    assert len(txm.store.attempts(stored.id)) == 1  # never re-signed
    assert txm.store.counters().get("nonce_reassigned", 0) == 0


def test_a_nonce_taken_by_another_tool_is_still_resent_behind_a_lagging_backend(
        anvil: Anvil, tmp_path: Path) -> None:
    """The fix must not turn a real nonce conflict into a mint that never happens."""
    w3 = live(anvil)
    nft, _ = deploy_contract(w3, OWNER, "AccessCredentialNFT", "Access", "BHA", "")
    w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]  # anvil-only
    with RpcProxy(anvil.url, stale_reads=STALE) as proxy:
        txm = manager(proxy.url, tmp_path / "tx.db", 0)
        minter = NftMinter(txm, nft)
        stored = txm.submit(mint_key(7), "mint", 7, minter.mint_call(mint_request()))
        # another tool holding the same key replaces our pending mint with a plain transfer
        foreign = OWNER.sign_transaction({
            "type": 2, "chainId": w3.eth.chain_id, "nonce": stored.nonce, "to": ALICE.address,
            "value": 0, "gas": 21_000, "maxFeePerGas": 50 * GWEI,
            "maxPriorityFeePerGas": 50 * GWEI})
        w3.eth.send_raw_transaction(foreign.raw_transaction)
        w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]  # anvil-only
        w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]  # anvil-only
        token = minter.mint_for_subscription(7, mint_request())
    assert minted_to_alice(w3, nft) == [token]
    again = txm.store.get(mint_key(7))
    assert again is not None and again.nonce == stored.nonce + 1
    assert txm.store.counters()["nonce_reassigned"] == 1
