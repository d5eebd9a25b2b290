"""Signing for one chain: the configured chain id, agreed to by the node we send through.

The chain id in a signed transaction decides which network will execute it. It comes from
``chain.chain_id`` (or the chain the database is bound to), never from whatever node answers:
a node on another network is refused with one line before anything is signed for it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from eth_account.signers.local import LocalAccount
from eth_account.types import AccessListEntry
from eth_typing import HexStr
from hexbytes import HexBytes
from web3 import Web3

from listener.chain.rpc import WrongChainError
from listener.writeback.fees import Fees
from listener.writeback.tx_store import SignedAttempt


def agreed_chain_id(w3: Web3, configured: int | None) -> int:
    """``configured``, after checking the node serves it; the node's only when none is
    configured (tests that build a manager by hand)."""
    served = int(w3.eth.chain_id)
    if configured is not None and served != configured:
        raise WrongChainError(f"the signer's RPC serves chain id {served}, but transactions "
                              f"are signed for {configured} (chain.chain_id); fix "
                              "chain.rpc_urls or chain.chain_id")
    return served if configured is None else configured


def eip1559_signer(account: LocalAccount, chain_id: int, *, to: str, data: bytes, value: int,
                   gas: int, fees: Fees) -> Callable[[int], SignedAttempt]:
    """Sign the call for a nonce chosen later (inside the store's write lock)."""

    def sign(nonce: int) -> SignedAttempt:
        tx: dict[str, Sequence[AccessListEntry] | bytes | HexStr | int] = {
            "type": 2, "chainId": chain_id, "nonce": nonce,
            "to": Web3.to_checksum_address(to), "data": HexBytes(data), "value": value,
            "gas": gas, "maxFeePerGas": fees.max_fee, "maxPriorityFeePerGas": fees.priority_fee}
        signed = account.sign_transaction(tx)
        return SignedAttempt(raw_tx=bytes(signed.raw_transaction),
                             tx_hash="0x" + bytes(signed.hash).hex(),
                             max_fee=fees.max_fee, priority_fee=fees.priority_fee)

    return sign
