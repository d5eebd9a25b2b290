"""Which transaction used a nonce, read so that a load-balanced RPC cannot fool us.

Behind a load balancer, "latest" reads come from whichever backend answered: the nonce from a
node that has our block, the receipt from one that has not. Reads pinned to a block number are
answered right or not at all (a backend without that block fails), so the consuming block is
found by bisecting pinned ``eth_getTransactionCount`` reads, then read by number.
"""

from __future__ import annotations

from collections.abc import Mapping

from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import BlockNotFound


def nonce_user(w3: Web3, sender: str, nonce: int, since: int,
               head: int) -> tuple[int, str] | None:
    """(block, tx hash) of ``sender``'s transaction with ``nonce``, mined after ``since`` and
    at or below ``head``; None while no node we reach can show it."""

    def count_at(block: int) -> int:
        return int(w3.eth.get_transaction_count(Web3.to_checksum_address(sender), block))

    if count_at(head) <= nonce:
        return None
    low = since if count_at(since) <= nonce else 0
    high = head  # invariant: count_at(low) <= nonce < count_at(high)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if count_at(middle) > nonce else (middle, high)
    try:
        block = w3.eth.get_block(high, full_transactions=True)
    except BlockNotFound:
        return None
    for tx in block.get("transactions", []):
        if isinstance(tx, Mapping) and int(tx["nonce"]) == nonce \
                and str(tx["from"]).lower() == sender.lower():
            return high, "0x" + bytes(HexBytes(tx["hash"])).hex()
    return None
