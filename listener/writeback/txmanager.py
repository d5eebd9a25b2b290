"""Exactly-once chain writes for the single signer (mint, expiry and credential updates).

Rules, in the order they protect us:
- A request is named by an idempotency key; a second request with the same key never
  signs a second transaction, it follows the first one.
- The nonce is allocated and the transaction signed and committed to SQLite BEFORE it is
  broadcast. After a crash the stored raw bytes are re-sent unchanged.
- A receipt counts only at the confirmation depth; until then it is re-read every pass, and
  a transaction a reorg dropped is re-sent (same bytes).
- Fees are EIP-1559 under a cap; after ``bump_after_blocks`` blocks without a receipt a
  replacement with the same nonce and higher fees is signed, stored, then broadcast.
- Our nonce used, no receipt of ours visible (a load balancer's lagging backend)? The
  consuming transaction is found by pinned reads (:mod:`nonce_trace`): ours, wait for its
  receipt; another's, once at depth with its receipt visible, ``resolve`` reads the chain and
  only if the effect is provably absent is the request re-signed with a new nonce.
- Node refusals are classified; insufficient funds and fee-cap stalls raise an alert (health
  red) and return control instead of spinning.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import ContractLogicError, Web3RPCError
from web3.types import Wei

from listener.chain.contracts import describe_revert
from listener.writeback.fees import FeePolicy, Fees
from listener.writeback.nonce_trace import nonce_user
from listener.writeback.receipt_wait import receipt_poll_delays
from listener.writeback.send_errors import (
    SendOutcome,
    classify_send_error,
    rpc_message,
    short_message,
)
from listener.writeback.signer_view import SignerView
from listener.writeback.tx_errors import (
    WOULD_FAIL,
    SignerUnhealthy,
    TxFailed,
    TxNodeError,
    TxPending,
)
from listener.writeback.tx_signing import agreed_chain_id, eip1559_signer
from listener.writeback.tx_store import Alert, SignedAttempt, TxAttempt, TxRequest, TxStore

log = structlog.get_logger(__name__)

#: Gas margin over the estimate: state can change between estimation and inclusion.
GAS_MARGIN_PERCENT = 25
GAS_SIMPLE_TRANSFER = 21_000


@dataclass(frozen=True)
class TxCall:
    """What to send: a contract call (``data``) to ``to`` with ``value`` wei."""

    to: str
    data: bytes
    value: int = 0
    gas: int | None = None


Parse = Callable[[dict[str, Any]], dict[str, Any]]
Resolve = Callable[[TxRequest], dict[str, Any] | None]


@dataclass(frozen=True)
class PollResult:
    request: TxRequest
    done: bool
    result: dict[str, Any] | None = None


class TxManager:
    """One signer; nonces, signed bytes, attempts and alerts live in a :class:`TxStore`."""

    def __init__(
        self,
        w3: Web3,
        store: TxStore,
        account: LocalAccount,
        *,
        fees: FeePolicy,
        confirmations: int | str = 0,
        bump_after_blocks: int = 3,
        receipt_timeout: float = 60.0,
        poll_interval: float = 0.2,
        lock: threading.Lock | None = None,
        chain_id: int | None = None,
    ) -> None:
        self.w3 = w3
        self.store = store
        self.account = account
        self.sender = account.address
        self.fees = fees
        self.confirmations = confirmations
        self.bump_after_blocks = max(1, bump_after_blocks)
        self.receipt_timeout = receipt_timeout
        self.poll_interval = poll_interval
        self.lock = lock or threading.Lock()
        self._chain_id = chain_id  # the configured chain; None only in hand-built tests
        self._agreed: int | None = None

    # -- hooks -----------------------------------------------------------------------------

    def _checkpoint(self, name: str) -> None:
        """A named point between two durable steps (crash tests override this)."""

    # -- chain reads -----------------------------------------------------------------------

    @property
    def chain(self) -> SignerView:
        """What the chain says about our transactions (canonical receipts only), read over
        the current ``w3`` at the current confirmation policy."""
        return SignerView(self.w3, self.sender, self.confirmations)

    def _chain(self) -> int:
        """The chain id we sign for (see :mod:`tx_signing`); the node is asked once."""
        if self._agreed is None:
            self._agreed = agreed_chain_id(self.w3, self._chain_id)
        return self._agreed

    # -- signing ---------------------------------------------------------------------------

    def _estimate_gas(self, call: TxCall, kind: str) -> int:
        """Estimate (with a margin); a would-be revert fails here, before anything is stored."""
        if call.gas is not None:
            return call.gas
        try:
            estimate = int(self.w3.eth.estimate_gas({
                "from": self.sender, "to": Web3.to_checksum_address(call.to),
                "data": HexBytes(call.data), "value": Wei(call.value)}))
        except ContractLogicError as exc:
            data = exc.data if isinstance(exc.data, (str, bytes)) else None
            raise TxFailed(f"{kind} would fail: {describe_revert(data)}; is {self.sender} the "
                           "contract owner and are the arguments valid?") from None
        except Web3RPCError as exc:
            message = rpc_message(exc)
            if classify_send_error(message) is SendOutcome.INSUFFICIENT_FUNDS:
                alert = (f"signer {self.sender} cannot pay for {kind}: insufficient funds; "
                         "send it ETH")
                self.store.set_alert(self.sender, "insufficient_funds", alert)
                raise SignerUnhealthy(alert) from None
            if any(marker in message.lower() for marker in WOULD_FAIL):
                raise TxFailed(f"{kind} would fail: {short_message(message)}") from None
            raise TxNodeError(f"{kind}: the node could not estimate gas: {short_message(message)}; "
                              "retried") from None
        return estimate * (100 + GAS_MARGIN_PERCENT) // 100

    def _signer(self, *, to: str, data: bytes, value: int, gas: int,
                fees: Fees) -> Callable[[int], SignedAttempt]:
        return eip1559_signer(self.account, self._chain(), to=to, data=data, value=value,
                              gas=gas, fees=fees)

    def _initial_fees(self) -> Fees:
        base = self.chain.base_fee()
        fees = self.fees.initial(base)
        if fees is None:
            message = (f"base fee {base} wei is at or above the cap signer.max_fee_gwei "
                       f"({self.fees.cap} wei); waiting for fees to fall or raise the cap")
            self.store.set_alert(self.sender, "fee_cap", message)
            raise SignerUnhealthy(message)
        self.store.clear_alert(self.sender, "fee_cap")
        return fees

    # -- public API ------------------------------------------------------------------------

    def submit(self, key: str, kind: str, subscription_id: int | None, call: TxCall) -> TxRequest:
        """Sign, store and broadcast the transaction for ``key`` (once); return the request."""
        existing = self.store.get(key)
        if existing is not None:
            return existing
        # RPC reads happen outside the SQLite write lock; nonce choice happens inside it.
        gas = self._estimate_gas(call, kind)
        fees = self._initial_fees()
        head = self.chain.head()
        chain_nonce = self.chain.nonce("pending")
        with self.lock:
            request, created = self.store.create(
                key=key, kind=kind, subscription_id=subscription_id, sender=self.sender,
                to_address=Web3.to_checksum_address(call.to), data=call.data, value=call.value,
                gas=gas, created_block=head, chain_nonce=chain_nonce,
                sign=self._signer(to=call.to, data=call.data, value=call.value, gas=gas,
                                  fees=fees))
        if not created:
            return request
        attempt = self.store.attempts(request.id)[-1]
        log.info("tx.signed", request_key=key, kind=kind, nonce=request.nonce,
                 tx_hash=attempt.tx_hash)
        self._checkpoint("signed")
        self._broadcast(request, attempt)
        self._checkpoint("broadcast")
        return request

    def execute(self, key: str, kind: str, subscription_id: int | None, call: TxCall,
                parse: Parse, resolve: Resolve | None = None) -> dict[str, Any]:
        """Run ``key`` to a confirmed receipt exactly once and return ``parse(receipt)``.
        Raises TxPending when not confirmed within ``receipt_timeout`` (call again later),
        SignerUnhealthy when funds or the fee cap block progress, TxFailed on a revert."""
        request = self.submit(key, kind, subscription_id, call)
        deadline = time.monotonic() + self.receipt_timeout
        delays = receipt_poll_delays(self.poll_interval)
        while True:
            outcome = self.poll(request.idempotency_key, parse, resolve)
            if outcome.done:
                assert outcome.result is not None
                return outcome.result
            if time.monotonic() > deadline:
                raise TxPending(f"{kind} transaction for {key} is not confirmed yet "
                                f"(nonce {outcome.request.nonce}); it is stored and followed "
                                "up on the next pass (or by re-running the same command)")
            time.sleep(next(delays))

    def poll(self, key: str, parse: Parse, resolve: Resolve | None = None) -> PollResult:
        """One pass over the request: receipt, depth, reorg, rebroadcast, bump, resolution."""
        request = self.store.get(key)
        if request is None:
            raise TxFailed(f"no transaction is stored for {key}")
        if request.state == "confirmed":
            return PollResult(request, True, request.result)
        if request.state == "reverted":
            raise TxFailed(f"{request.kind} transaction {request.tx_hash} reverted on chain "
                           f"({request.error}); fix the cause, then retry it")
        attempts = self.store.attempts(request.id, nonce=request.nonce)
        head = self.chain.head()
        for attempt in reversed(attempts):
            receipt = self.chain.receipt(attempt.tx_hash)
            if receipt is not None:
                return self._on_receipt(request, attempt, receipt, head, parse)
        if request.state == "mined":
            log.warning("tx.reorged_out", request_key=key, tx_hash=request.tx_hash,
                        block=request.block_number)
            self.store.incr("reorged_out")
            self.store.set_state(request.id, "pending")
            request = self.store.by_id(request.id)
        if self.chain.nonce("latest") > request.nonce:
            return self._nonce_consumed(request, attempts, head, parse, resolve)
        stale = head - attempts[-1].signed_block >= self.bump_after_blocks
        if stale and self._fill_gaps(request.nonce):
            stale = False  # a gap below us, not our fee, was what held us up
        if not any(self.chain.known_to_node(a.tx_hash) for a in attempts):
            # Not in the node's pool: re-send the stored bytes. A node that refuses them as
            # too cheap (base fee rose; it may even have evicted them) gets a bump once stale.
            if self._rebroadcast(request, attempts) is SendOutcome.UNDERPRICED and stale:
                self._bump(request, attempts[-1], head)
        elif stale:
            self._bump(request, attempts[-1], head)
        return PollResult(request, False)

    def resume(self) -> int:
        """At start and now and again: re-send open requests' stored bytes in nonce order,
        drive gap fillers to confirmation (nobody else waits on them) and fill a nonce gap
        below our lowest open nonce (unused, not in the pool, not consumed) with a zero-value
        self-transfer so ours are not stuck behind it. Returns how many are still open."""
        open_requests = self.store.open_requests(self.sender)
        if open_requests:
            self._fill_gaps(open_requests[0].nonce)
        for request in self.store.open_requests(self.sender):
            if request.kind == "gapfill":
                self.poll(request.idempotency_key, lambda _receipt: {})
                continue
            attempts = self.store.attempts(request.id, nonce=request.nonce)
            if attempts and not any(self.chain.known_to_node(a.tx_hash) for a in attempts):
                self._rebroadcast(request, attempts)
        return len(self.store.open_requests(self.sender))

    def alerts(self) -> list[Alert]:
        return self.store.alerts()

    def healthy(self) -> bool:
        return not self.store.alerts()

    # -- internals -------------------------------------------------------------------------

    def _on_receipt(self, request: TxRequest, attempt: TxAttempt, receipt: dict[str, Any],
                    head: int, parse: Parse) -> PollResult:
        number = int(receipt["blockNumber"])
        block_hash = "0x" + bytes(HexBytes(receipt["blockHash"])).hex()
        if not self.chain.is_confirmed(number, head):
            if request.state != "mined" or request.block_hash != block_hash:
                self.store.set_state(request.id, "mined", tx_hash=attempt.tx_hash,
                                     block_number=number, block_hash=block_hash)
                log.info("tx.mined", request_key=request.idempotency_key, tx_hash=attempt.tx_hash,
                         block=number)
            return PollResult(self.store.by_id(request.id), False)
        self._checkpoint("confirmed")
        self.store.clear_alert(self.sender, "insufficient_funds")
        self.store.clear_alert(self.sender, "nonce_conflict")
        if int(receipt["status"]) != 1:
            self.store.set_state(request.id, "reverted", tx_hash=attempt.tx_hash,
                                 block_number=number, block_hash=block_hash, error="reverted")
            raise TxFailed(f"{request.kind} transaction {attempt.tx_hash} reverted in block "
                           f"{number}; check the contract owner and arguments, then retry it")
        result = parse(receipt)
        self.store.set_state(request.id, "confirmed", tx_hash=attempt.tx_hash,
                             block_number=number, block_hash=block_hash, result=result)
        log.info("tx.confirmed", request_key=request.idempotency_key, tx_hash=attempt.tx_hash,
                 block=number)
        return PollResult(self.store.by_id(request.id), True, result)

    def _nonce_consumed(self, request: TxRequest, attempts: list[TxAttempt], head: int,
                        parse: Parse, resolve: Resolve | None) -> PollResult:
        """Our nonce is used but no attempt of ours has a receipt: read the chain, decide."""
        for attempt in reversed(attempts):
            receipt = self.chain.receipt(attempt.tx_hash)  # mined between our two reads?
            if receipt is not None:
                return self._on_receipt(request, attempt, receipt, head, parse)
        if request.kind == "gapfill":  # someone else's transaction filled it: fine
            self.store.set_state(request.id, "confirmed", result={}, error="nonce filled elsewhere")
            return PollResult(self.store.by_id(request.id), True, {})
        if not self._taken_by_another(request, attempts, head):
            return PollResult(request, False)
        return self._resolve_or_resign(request, head, resolve)

    def _taken_by_another(self, request: TxRequest, attempts: list[TxAttempt],
                          head: int) -> bool:
        """True only when a transaction not ours provably used the nonce, at depth, and its
        receipt is visible (so the backend answering receipts and logs has its block)."""
        user = nonce_user(self.w3, self.sender, request.nonce, attempts[0].signed_block, head)
        if user is None or user[1] in {a.tx_hash for a in attempts}:
            log.debug("tx.receipt_not_visible", request_key=request.idempotency_key,
                      nonce=request.nonce, ours=user is not None)
            return False  # ours (its receipt will come) or not readable yet: never re-sign
        receipt = self.chain.receipt(user[1])
        return receipt is not None and self.chain.is_confirmed(int(receipt["blockNumber"]), head)

    def _resolve_or_resign(self, request: TxRequest, head: int,
                           resolve: Resolve | None) -> PollResult:
        """Another transaction used our nonce: confirm from chain state or sign anew."""
        result = resolve(request) if resolve is not None else None
        if result is not None:
            self.store.set_state(request.id, "confirmed", result=result,
                                 error="resolved from chain state")
            log.warning("tx.resolved_from_chain", request_key=request.idempotency_key)
            return PollResult(self.store.by_id(request.id), True, result)
        message = (f"nonce {request.nonce} of {self.sender} was used by a transaction not "
                   "signed by this manager; is the signer key shared with another tool?")
        self.store.set_alert(self.sender, "nonce_conflict", message)
        if resolve is None:
            raise TxFailed(f"{request.kind} for {request.idempotency_key}: outcome uncertain "
                           f"({message}); no way to read the effect from the chain, so it is "
                           "not sent again — check by hand")
        log.warning("tx.nonce_taken_resending", request_key=request.idempotency_key,
                    old_nonce=request.nonce)
        self.store.incr("nonce_reassigned")
        fees = self._initial_fees()
        chain_nonce = self.chain.nonce("pending")
        with self.lock:
            request = self.store.renonce(
                request.id, sender=self.sender, chain_nonce=chain_nonce, head=head,
                sign=self._signer(to=request.to_address, data=request.data, value=request.value,
                                  gas=request.gas, fees=fees))
        self._broadcast(request, self.store.attempts(request.id, nonce=request.nonce)[-1])
        return PollResult(request, False)

    def _rebroadcast(self, request: TxRequest, attempts: list[TxAttempt]) -> SendOutcome:
        """Re-send stored bytes (newest, highest fee, first); never re-sign."""
        log.info("tx.rebroadcast", request_key=request.idempotency_key, nonce=request.nonce)
        self.store.incr("rebroadcasts")
        outcome = SendOutcome.OTHER
        for attempt in reversed(attempts):
            outcome = self._broadcast(request, attempt)
            if outcome in (SendOutcome.ACCEPTED, SendOutcome.KNOWN):
                return outcome
            if outcome is SendOutcome.UNDERPRICED:
                return outcome  # older attempts are cheaper still
        return outcome

    def _bump(self, request: TxRequest, newest: TxAttempt, head: int) -> None:
        base = self.chain.base_fee()
        fees = self.fees.bump(Fees(newest.max_fee, newest.priority_fee), base)
        if fees is None:
            message = (f"{request.kind} transaction (nonce {request.nonce}) is unconfirmed "
                       f"after {head - newest.signed_block} blocks and the fee cap "
                       f"signer.max_fee_gwei ({self.fees.cap} wei) allows no further bump")
            self.store.set_alert(self.sender, "fee_cap", message)
            self.store.incr("gas_bump_exceeds_limit")
            log.warning("tx.bump_capped", request_key=request.idempotency_key, nonce=request.nonce)
            return
        sign = self._signer(to=request.to_address, data=request.data, value=request.value,
                            gas=request.gas, fees=fees)
        with self.lock:
            attempt = self.store.add_attempt(request.id, request.nonce, sign(request.nonce), head)
        self.store.incr("gas_bumps")
        log.info("tx.bumped", request_key=request.idempotency_key, nonce=request.nonce,
                 tx_hash=attempt.tx_hash, max_fee=fees.max_fee, priority_fee=fees.priority_fee)
        self._checkpoint("bumped")
        self._broadcast(request, attempt)

    def _broadcast(self, request: TxRequest, attempt: TxAttempt) -> SendOutcome:
        try:
            self.w3.eth.send_raw_transaction(attempt.raw_tx)
        except (Web3RPCError, ValueError) as exc:
            outcome = classify_send_error(rpc_message(exc))
            detail = short_message(rpc_message(exc))
        else:
            outcome, detail = SendOutcome.ACCEPTED, ""
        if outcome in (SendOutcome.ACCEPTED, SendOutcome.KNOWN):
            self.store.mark_broadcast(attempt.id)
            self.store.clear_alert(self.sender, "insufficient_funds")
            log.info("tx.broadcast", request_key=request.idempotency_key, tx_hash=attempt.tx_hash,
                     outcome=outcome.value)
            return outcome
        log.warning("tx.broadcast_refused", request_key=request.idempotency_key,
                    tx_hash=attempt.tx_hash, outcome=outcome.value, detail=detail)
        if outcome is SendOutcome.INSUFFICIENT_FUNDS:
            message = (f"signer {self.sender} cannot pay for {request.kind} (nonce "
                       f"{request.nonce}): insufficient funds; send it ETH — the stored "
                       "transaction is re-sent automatically")
            self.store.set_alert(self.sender, "insufficient_funds", message)
            raise SignerUnhealthy(message)
        if outcome is SendOutcome.OTHER:
            raise TxNodeError(f"{request.kind} transaction {attempt.tx_hash} was refused by the "
                              f"node: {detail}; it stays stored and is re-sent on the next pass")
        # NONCE_TOO_LOW and UNDERPRICED are settled by the next poll (receipt, resolution
        # or a bump), never by signing blindly here.
        return outcome

    def _fill_gaps(self, below: int) -> bool:
        """Fill unconsumed nonces under ``below`` that no request of ours holds."""
        latest = self.chain.nonce("latest")
        if below <= latest:
            return False
        # The node's pending count runs through the contiguous nonces it holds: a nonce
        # under it has a transaction waiting (maybe another tool's), which is not a gap.
        pending = self.chain.nonce("pending")
        ours = self.store.stored_nonces(self.sender)
        filled = False
        for nonce in range(max(latest, pending), below):
            if nonce in ours:
                continue
            log.warning("tx.nonce_gap", nonce=nonce, below=below)
            self.store.incr("nonce_gaps_filled")
            self._fill(nonce)
            filled = True
        return filled

    def _fill(self, nonce: int) -> None:
        fees = self._initial_fees()
        head = self.chain.head()
        key = f"gapfill:{self.sender}:{nonce}"
        with self.lock:
            request, created = self.store.create(
                key=key, kind="gapfill", subscription_id=None, sender=self.sender,
                to_address=self.sender, data=b"", value=0, gas=GAS_SIMPLE_TRANSFER,
                created_block=head, chain_nonce=nonce, exact_nonce=nonce,
                sign=self._signer(to=self.sender, data=b"", value=0, gas=GAS_SIMPLE_TRANSFER,
                                  fees=fees))
        if created:
            self._broadcast(request, self.store.attempts(request.id)[-1])
