"""Raw transactions and reorgs on anvil (``anvil_mine``, ``anvil_reorg``), shared by the reorg
tests: a purchase signed but not sent can be put back into a reorged chain at any offset."""

from __future__ import annotations

from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import Web3

from listener.chain.contracts import build_transaction, load_artifact


class AnvilActions:
    """Mixed into a test's chain handle, which provides ``w3`` and ``user``."""

    w3: Web3
    user: LocalAccount

    def sign_buy(self, subscriptions: str | Any, days: int = 2) -> bytes:
        """A signed ``buySubscription(1, days, 1, b"payload")`` from ``user``, not sent."""
        subs = self.w3.eth.contract(address=subscriptions,
                                    abi=load_artifact("BlockhostSubscriptions")["abi"])
        tx = build_transaction(self.w3, self.user,
                               subs.functions.buySubscription(1, days, 1, b"payload"))
        return bytes(self.user.sign_transaction(tx).raw_transaction)

    def send_raw(self, raw: bytes) -> int:
        tx_hash = self.w3.eth.send_raw_transaction(raw)
        return int(self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30).blockNumber)

    def mine(self, blocks: int) -> None:
        self.w3.provider.make_request("anvil_mine", [hex(blocks)])

    def reorg(self, depth: int, txs: list[tuple[bytes, int]] = ()) -> None:
        reply = self.w3.provider.make_request(
            "anvil_reorg", [depth, [["0x" + raw.hex(), offset] for raw, offset in txs]])
        assert "error" not in reply, reply
