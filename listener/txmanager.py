"""Exactly-once chain writes: sign and persist BEFORE broadcast, keyed by an idempotency key.

A crash at any line resumes correctly:
- before the row is committed: nothing was broadcast, the next attempt signs afresh;
- after the commit, before/after broadcast: the stored raw bytes are re-sent unchanged
  (the node answers "already known" or "nonce too low" and we wait for the receipt);
- after the receipt, before recording: the receipt is fetched again by the stored hash.
A second request with the same key never signs a second transaction.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import structlog
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.exceptions import TransactionNotFound, Web3RPCError

from listener.errors import BlockhostError
from listener.store import Store, TxRecord

log = structlog.get_logger(__name__)

_HARMLESS_RESEND = ("already known", "nonce too low", "known transaction",
                    "already imported", "replacement transaction underpriced")


class TxFailed(BlockhostError):
    """The transaction was mined but reverted, or could not be sent at all."""


class TxPending(BlockhostError):
    """No receipt yet within the wait budget; the next pass continues waiting."""


class TxManager:
    """One signer; nonces and signed bytes live in the store."""

    def __init__(
        self,
        w3: Web3,
        store: Store,
        account: LocalAccount,
        *,
        max_fee_gwei: float,
        max_priority_fee_gwei: float,
        receipt_timeout: float = 60.0,
        poll_interval: float = 0.2,
        lock: threading.Lock | None = None,
    ) -> None:
        self.w3 = w3
        self.store = store
        self.account = account
        self.max_fee = Web3.to_wei(max_fee_gwei, "gwei")
        self.max_priority = Web3.to_wei(max_priority_fee_gwei, "gwei")
        self.receipt_timeout = receipt_timeout
        self.poll_interval = poll_interval
        self.lock = lock or threading.Lock()

    def _next_nonce(self) -> int:
        chain = self.w3.eth.get_transaction_count(self.account.address, "pending")
        stored = self.store.next_nonce(self.account.address)
        return max(chain, stored or 0)

    def _fees(self) -> tuple[int, int]:
        base = int(self.w3.eth.get_block("latest").get("baseFeePerGas", 0) or 0)
        priority = min(self.max_priority, self.max_fee)
        max_fee = min(self.max_fee, 2 * base + priority)
        if max_fee < base:
            raise TxPending(f"base fee {base} wei is above the cap signer.max_fee_gwei; waiting")
        return max_fee, priority

    def sign_and_store(self, key: str, kind: str, subscription_id: int | None,
                       build: Callable[[dict[str, Any]], dict[str, Any]]) -> TxRecord:
        """Sign a new transaction for ``key`` and commit it, unless one exists already."""
        existing = self.store.tx_by_key(key)
        if existing is not None:
            return existing
        nonce = self._next_nonce()
        max_fee, priority = self._fees()
        params = {"from": self.account.address, "nonce": nonce, "chainId": self.w3.eth.chain_id,
                  "maxFeePerGas": max_fee, "maxPriorityFeePerGas": priority, "type": 2}
        tx = build(params)
        if "gas" not in tx:
            tx["gas"] = int(self.w3.eth.estimate_gas({k: v for k, v in tx.items()
                                                      if k not in {"nonce", "type"}}) * 1.25)
        signed = self.account.sign_transaction(tx)
        record = self.store.insert_signed_tx(
            key=key, kind=kind, subscription_id=subscription_id, sender=self.account.address,
            nonce=nonce, raw_tx=bytes(signed.raw_transaction),
            tx_hash="0x" + bytes(signed.hash).hex(),
        )
        log.info("tx.signed", key=key, nonce=nonce, tx_hash=record.tx_hash)
        return record

    def broadcast(self, record: TxRecord) -> None:
        try:
            self.w3.eth.send_raw_transaction(record.raw_tx)
        except Web3RPCError as exc:
            message = str(exc).lower()
            if not any(marker in message for marker in _HARMLESS_RESEND):
                raise TxFailed(f"{record.kind} transaction {record.tx_hash} was refused: "
                               f"{_short(message)}") from None
        if record.state == "signed":
            self.store.update_tx(record.idempotency_key, state="broadcast")

    def wait(self, record: TxRecord) -> dict[str, Any]:
        """Wait for the receipt of the stored hash; record and return it."""
        deadline = time.monotonic() + self.receipt_timeout
        while True:
            try:
                receipt = self.w3.eth.get_transaction_receipt(record.tx_hash)
            except TransactionNotFound:
                receipt = None
            if receipt is not None:
                break
            if time.monotonic() > deadline:
                raise TxPending(f"{record.kind} transaction {record.tx_hash} not mined yet")
            time.sleep(self.poll_interval)
        if int(receipt["status"]) != 1:
            self.store.update_tx(record.idempotency_key, state="failed",
                                 block_number=int(receipt["blockNumber"]), error="reverted")
            raise TxFailed(f"{record.kind} transaction {record.tx_hash} reverted")
        return dict(receipt)

    def execute(self, key: str, kind: str, subscription_id: int | None,
                build: Callable[[dict[str, Any]], dict[str, Any]],
                parse: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
        """Run the transaction for ``key`` to completion exactly once; return its result."""
        # Nonce choice, signing, the commit and the first broadcast are serialized so two
        # workers can never sign the same nonce.
        with self.lock:
            record = self.sign_and_store(key, kind, subscription_id, build)
            if record.state == "mined" and record.result is not None:
                return record.result
            if record.state == "failed":
                raise TxFailed(f"{kind} transaction {record.tx_hash} failed earlier: {record.error}")
            self.broadcast(record)
        receipt = self.wait(record)
        result = parse(receipt)
        self.store.update_tx(key, state="mined", block_number=int(receipt["blockNumber"]),
                             result=result)
        log.info("tx.mined", key=key, tx_hash=record.tx_hash, block=int(receipt["blockNumber"]))
        return result


def _short(message: str) -> str:
    return message.splitlines()[0][:200] if message else "no message"
