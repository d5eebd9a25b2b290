"""deploy_all on a real anvil chain: addresses with code, ownership, and a working purchase."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_account import Account
from web3 import Web3
from web3.logs import DISCARD

from listener.chain.contracts import (
    Deployment,
    TransactionFailed,
    deploy_all,
    load_abi,
    load_artifact,
    send_transaction,
)
from listener.devkit.devchain import DEV_PRIVATE_KEYS
from listener.errors import UserError

DEPLOYER = Account.from_key(DEV_PRIVATE_KEYS[0])
BUYER = Account.from_key(DEV_PRIVATE_KEYS[1])


def test_deploy_all_and_buy(w3: Web3) -> None:
    steps: list[str] = []
    dep = deploy_all(w3, DEV_PRIVATE_KEYS[0], on_step=steps.append)
    assert isinstance(dep, Deployment)
    assert dep.chain_id == 31337 and dep.deployer == DEPLOYER.address
    assert len({dep.stablecoin, dep.subscriptions, dep.nft}) == 3
    for address in (dep.stablecoin, dep.subscriptions, dep.nft):
        assert len(w3.eth.get_code(address)) > 0
    assert dep.block_number == w3.eth.block_number
    assert not any(DEV_PRIVATE_KEYS[0][2:] in step for step in steps)
    assert json.loads(dep.to_json()) == dep.to_dict()

    nft = w3.eth.contract(address=dep.nft, abi=load_abi("AccessCredentialNFT"))
    subs = w3.eth.contract(address=dep.subscriptions, abi=load_abi("BlockhostSubscriptions"))
    token = w3.eth.contract(address=dep.stablecoin, abi=load_abi("MockStablecoin"))
    assert nft.functions.owner().call() == DEPLOYER.address
    assert (nft.functions.name().call(), nft.functions.symbol().call()) == ("Blockhost Access", "BHA")
    assert subs.functions.owner().call() == DEPLOYER.address
    assert subs.functions.getPrimaryStablecoin().call() == dep.stablecoin
    assert token.functions.decimals().call() == 6
    assert subs.functions.getPlan(1).call() == ["basic", 100, True]

    # A subscriber buys a week through the stablecoin.
    send_transaction(w3, BUYER, token.functions.mint(BUYER.address, 100 * 10**6))
    send_transaction(w3, BUYER, token.functions.approve(dep.subscriptions, 7 * 10**6))
    receipt = send_transaction(w3, BUYER, subs.functions.buySubscription(1, 7, 1, b"\x04blob"))
    (created,) = subs.events.SubscriptionCreated().process_receipt(receipt, errors=DISCARD)
    assert created["args"]["subscriptionId"] == 1
    assert created["args"]["subscriber"] == BUYER.address
    assert created["args"]["paidAmount"] == 7 * 10**6
    assert created["args"]["userEncrypted"] == b"\x04blob"
    assert token.functions.balanceOf(dep.subscriptions).call() == 7 * 10**6

    # The deployer key mints credentials.
    receipt = send_transaction(
        w3, DEPLOYER, nft.functions.mint(BUYER.address, b"\x01", "s", "d", "", "", 0)
    )
    (minted,) = nft.events.CredentialMinted().process_receipt(receipt, errors=DISCARD)
    assert minted["args"]["tokenId"] == 0


def test_deploy_all_with_existing_stablecoin_and_no_plan(w3: Web3) -> None:
    first = deploy_all(w3, DEV_PRIVATE_KEYS[0])
    second = deploy_all(
        w3, DEV_PRIVATE_KEYS[1], stablecoin=first.stablecoin.lower(), initial_plan=None,
        nft_name="Other", nft_symbol="OTH", default_image_uri="ipfs://img",
    )
    assert second.stablecoin == first.stablecoin
    assert second.deployer == BUYER.address
    subs = w3.eth.contract(address=second.subscriptions, abi=load_abi("BlockhostSubscriptions"))
    nft = w3.eth.contract(address=second.nft, abi=load_abi("AccessCredentialNFT"))
    assert subs.functions.getTotalPlanCount().call() == 0
    assert subs.functions.getPrimaryStablecoin().call() == first.stablecoin
    assert nft.functions.owner().call() == BUYER.address
    assert nft.functions.defaultImageUri().call() == "ipfs://img"


def test_deploy_all_rejects_bad_inputs_without_leaking_the_key(w3: Web3) -> None:
    bad_key = "0x" + "zz" * 32
    with pytest.raises(UserError) as info:
        deploy_all(w3, bad_key)
    assert "zz" not in str(info.value)
    with pytest.raises(UserError, match="not an address"):
        deploy_all(w3, DEV_PRIVATE_KEYS[0], stablecoin="0x1234")
    with pytest.raises(UserError, match="has no code"):
        deploy_all(w3, DEV_PRIVATE_KEYS[0], stablecoin=BUYER.address)


def test_send_transaction_reports_reverts(w3: Web3) -> None:
    dep = deploy_all(w3, DEV_PRIVATE_KEYS[0])
    subs = w3.eth.contract(address=dep.subscriptions, abi=load_abi("BlockhostSubscriptions"))
    # Caught at estimation: nothing is sent, the message names the custom error.
    with pytest.raises(TransactionFailed, match=r"OwnableUnauthorizedAccount\(address\)"):
        send_transaction(w3, BUYER, subs.functions.createPlan("x", 1))
    # With an explicit gas limit the transaction is mined and reverts: status 0 is an error too.
    nonce = w3.eth.get_transaction_count(BUYER.address)
    with pytest.raises(TransactionFailed, match="reverted in block") as info:
        send_transaction(w3, BUYER, subs.functions.createPlan("x", 1), gas=200_000)
    assert info.value.receipt is not None and info.value.receipt["status"] == 0
    assert w3.eth.get_transaction_count(BUYER.address) == nonce + 1


def test_load_artifact_errors(tmp_path: Path) -> None:
    assert load_artifact("MockStablecoin")["contractName"] == "MockStablecoin"
    with pytest.raises(UserError, match="make contracts"):
        load_artifact("NoSuchContract")
    with pytest.raises(UserError, match="invalid contract name"):
        load_artifact("../etc/passwd")
    (tmp_path / "Broken.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_artifact("Broken", tmp_path)
    (tmp_path / "Empty.json").write_text("{}")
    with pytest.raises(UserError, match="lacks an 'abi'"):
        load_artifact("Empty", tmp_path)
