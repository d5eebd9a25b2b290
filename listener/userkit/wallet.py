"""The subscriber's commands as one call each: a wallet key file and an RPC URL in, results out.

The key is read from a mode-0600 file, never taken from the command line.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from eth_account.signers.local import LocalAccount
from web3 import Web3

from listener.crypto.credentials import ConnectionDetails
from listener.crypto.key_files import load_private_key
from listener.errors import UserError
from listener.userkit.subscriber import (
    ExtendResult,
    SubscribeResult,
    credentials,
    extend,
    load_account,
    parse_server_public_key,
    subscribe,
    tokens_of,
)


def _wallet(rpc_url: str, key_file: Path) -> tuple[Web3, LocalAccount]:
    account = load_account(load_private_key(key_file, what="wallet key"))
    return Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 60})), account


def subscribe_with_key_file(rpc_url: str, key_file: Path, *, contract: str,
                            server_public_key: str, plan_id: int, days: int, legacy: bool,
                            public_secret: str) -> SubscribeResult:
    """Sign, encrypt to the server key (``0x04…`` text), approve and buy a subscription."""
    w3, account = _wallet(rpc_url, key_file)
    return subscribe(
        w3, account, subscription_contract=contract,
        server_public_key=parse_server_public_key(server_public_key),
        plan_id=plan_id, days=days, legacy=legacy, public_secret_default=public_secret)


def extend_with_key_file(rpc_url: str, key_file: Path, *, contract: str, subscription_id: int,
                         days: int) -> ExtendResult:
    """Approve and pay for ``days`` more of ``subscription_id``."""
    w3, account = _wallet(rpc_url, key_file)
    return extend(w3, account, subscription_contract=contract,
                  subscription_id=subscription_id, days=days)


def credentials_with_key_file(rpc_url: str, key_file: Path, *, nft_contract: str,
                              token_id: int | None) -> Iterator[tuple[int, ConnectionDetails]]:
    """The connection details in ``token_id`` (default: every token the wallet holds), one
    token at a time."""
    w3, account = _wallet(rpc_url, key_file)
    token_ids = [token_id] if token_id is not None else tokens_of(
        w3, nft_contract, account.address)
    if not token_ids:
        raise UserError(f"wallet {account.address} holds no access NFT on {nft_contract}")
    for each in token_ids:
        yield each, credentials(w3, account, nft_contract=nft_contract, token_id=each)
