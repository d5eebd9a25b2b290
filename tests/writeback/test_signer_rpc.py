"""The signer signs for the configured chain id, checks every RPC it uses against it and fails
over like the listener: real anvil, real contract, the production wiring (build_minter)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from hexbytes import HexBytes
from web3 import Web3

from listener.chain.contracts import deploy_contract
from listener.chain.journal import Store
from listener.chain.rpc import WrongChainError
from listener.config import Config, build_config
from listener.devkit.devchain import DEV_PRIVATE_KEYS, Anvil
from listener.devkit.devenv import write_secret_file
from listener.devkit.fault_proxy import RpcProxy
from listener.runtime.wiring import build_minter
from listener.writeback.fees import FeePolicy
from listener.writeback.nft import MintRequest, NftMinter
from listener.writeback.tx_store import TxStore
from listener.writeback.txmanager import TxManager

OWNER, ALICE = (Account.from_key(k) for k in DEV_PRIVATE_KEYS[:2])
ANVIL_CHAIN = 31337
SECRET = "SECRETKEY0123456789"


def dead_url() -> str:
    """A loopback URL nothing listens on, with an API key in its path like a provider's."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/v3/{SECRET}"


def mint_request() -> MintRequest:
    return MintRequest(to=ALICE.address, user_encrypted=b"\x01", public_secret="s",
                       description="d", image_uri="", animation_url_base64="",
                       expires_at=2_000_000_000)


@pytest.fixture
def nft(anvil: Anvil) -> str:
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    address, _ = deploy_contract(w3, OWNER, "AccessCredentialNFT", "Access", "BHA", "")
    return address


def config(tmp_path: Path, urls: list[str], nft: str, chain_id: int | None) -> Config:
    key = tmp_path / "signer.key"
    if not key.exists():
        write_secret_file(key, bytes(OWNER.key).hex())
    return build_config({
        "chain": {"rpc_urls": urls, "chain_id": chain_id, "nft_contract": nft,
                  "confirmations": 0},
        "signer": {"private_key_file": str(key)},
        "db": {"path": str(tmp_path / "blockhost.db")},
    }, origin="test")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(tmp_path / "blockhost.db")
    yield opened
    opened.close()


def minter_for(cfg: Config, store: Store) -> NftMinter:
    minter = build_minter(cfg, store)
    assert minter is not None
    return minter


def test_the_signer_fails_over_past_a_dead_first_url_and_names_no_key(
        anvil: Anvil, nft: str, tmp_path: Path, store: Store,
        capsys: pytest.CaptureFixture[str]) -> None:
    minter = minter_for(config(tmp_path, [dead_url(), anvil.url], nft, ANVIL_CHAIN), store)
    assert minter.mint_for_subscription(1, mint_request()) == 0
    assert minter.total_supply() == 1
    (request,) = minter.txm.store.requests()
    raw = minter.txm.store.attempts(request.id)[0].raw_tx
    assert TypedTransaction.from_bytes(HexBytes(raw)).as_dict()["chainId"] == ANVIL_CHAIN
    # the dead endpoint was tried, counted under a redacted name, and its key went nowhere
    counts = minter.txm.w3.provider.rpc.error_counts  # type: ignore[attr-defined]  # FailoverProvider
    assert counts and all(SECRET not in label for label in counts)
    assert any(label.startswith("0:") for label in counts)
    out, err = capsys.readouterr()
    assert "rpc.failover" in out + err and SECRET not in out + err
    dump = "\n".join(store.conn.iterdump())
    assert SECRET not in dump


def test_an_endpoint_on_another_chain_is_skipped_and_the_mint_goes_through_the_next(
        anvil: Anvil, nft: str, tmp_path: Path, store: Store) -> None:
    with RpcProxy(anvil.url, chain_id=5) as other_chain:
        minter = minter_for(config(tmp_path, [other_chain.url, anvil.url], nft, ANVIL_CHAIN),
                            store)
        assert minter.mint_for_subscription(1, mint_request()) == 0
        # only the chain id question reached the wrong endpoint: nothing was sent there
        assert set(other_chain.methods) == {"eth_chainId"}


def test_only_endpoints_on_another_chain_refuse_in_one_line_before_signing(
        anvil: Anvil, nft: str, tmp_path: Path, store: Store) -> None:
    node = Web3(Web3.HTTPProvider(anvil.url))
    nonce = node.eth.get_transaction_count(OWNER.address)
    minter = minter_for(config(tmp_path, [anvil.url], nft, 1), store)
    with pytest.raises(WrongChainError) as refused:
        minter.mint_for_subscription(1, mint_request())
    message = str(refused.value)
    assert "serves chain id 31337, expected 1" in message and "chain.chain_id" in message
    assert len(message.splitlines()) == 1
    assert minter.txm.store.requests() == []
    assert node.eth.get_transaction_count(OWNER.address) == nonce  # nothing was sent


def test_the_manager_signs_for_the_configured_chain_not_the_one_a_node_reports(
        anvil: Anvil, nft: str, tmp_path: Path) -> None:
    """Even over a plain Web3 (no RpcClient), a node claiming another chain id is refused
    before anything is signed, instead of signing for the chain it names."""
    with RpcProxy(anvil.url, chain_id=5) as liar:
        txm = TxManager(Web3(Web3.HTTPProvider(liar.url)), TxStore.open(tmp_path / "tx.db"),
                        OWNER, fees=FeePolicy.from_gwei(500, 1), chain_id=ANVIL_CHAIN)
        with pytest.raises(WrongChainError, match="serves chain id 5, but transactions are "
                                                  "signed for 31337"):
            NftMinter(txm, nft).mint_for_subscription(1, mint_request())
        assert txm.store.requests() == []


def test_without_a_configured_chain_id_every_endpoint_is_held_to_the_first_answer(
        anvil: Anvil, nft: str, tmp_path: Path, store: Store) -> None:
    with RpcProxy(anvil.url, chain_id=5) as other_chain:
        minter = minter_for(config(tmp_path, [anvil.url, other_chain.url], nft, None), store)
        assert minter.txm._chain() == ANVIL_CHAIN
        assert minter.mint_for_subscription(1, mint_request()) == 0
