"""What the chain says about the signer's transactions: head, base fee, the sender's nonces,
and receipts trusted only while the block they name is still canonical.

Read-only and shared by the transaction manager and its callers (the minter's pre-check, the
start-up repair), so a receipt means the same thing to all of them.
"""

from __future__ import annotations

from typing import Any, Literal

from eth_typing import ChecksumAddress
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import BlockNotFound, TransactionNotFound


class SignerView:
    """Chain reads for one sender at one confirmation policy (a depth, or "safe"/"finalized")."""

    def __init__(self, w3: Web3, sender: ChecksumAddress, confirmations: int | str = 0) -> None:
        self.w3 = w3
        self.sender = sender
        self.confirmations = confirmations

    def head(self) -> int:
        return int(self.w3.eth.block_number)

    def base_fee(self) -> int:
        return int(self.w3.eth.get_block("latest").get("baseFeePerGas") or 0)

    def nonce(self, tag: Literal["pending", "latest"]) -> int:
        return int(self.w3.eth.get_transaction_count(self.sender, tag))

    def is_confirmed(self, block_number: int, head: int) -> bool:
        """Whether ``block_number`` is at the confirmation depth below ``head`` (or at/under
        the node's "safe"/"finalized" block when that is the policy)."""
        if isinstance(self.confirmations, str):
            tagged = self.w3.eth.get_block(self.confirmations)  # type: ignore[arg-type]  # "safe"/"finalized"
            return int(tagged["number"]) >= block_number
        return block_number <= head - self.confirmations

    def receipt(self, tx_hash: str) -> dict[str, Any] | None:
        """The mined receipt of ``tx_hash``, or None (not mined, or from a reorged block)."""
        try:
            receipt = self.w3.eth.get_transaction_receipt(HexBytes(tx_hash))
        except TransactionNotFound:
            return None
        if receipt is None or receipt.get("blockNumber") is None:
            return None
        # A node can serve a receipt from a block it has since reorged away: trust it only if
        # the block at that height is still the one the receipt names.
        try:
            block = self.w3.eth.get_block(int(receipt["blockNumber"]))
        except BlockNotFound:  # a load balancer's backend behind the one that had the receipt
            return None
        if HexBytes(block["hash"]) != HexBytes(receipt["blockHash"]):
            return None
        return dict(receipt)

    def known_to_node(self, tx_hash: str) -> bool:
        """Whether the node has the transaction (in its pool or mined)."""
        try:
            return self.w3.eth.get_transaction(HexBytes(tx_hash)) is not None
        except TransactionNotFound:
            return False
