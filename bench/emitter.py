"""Produce many real ``SubscriptionCreated`` logs on anvil, fast.

Buying subscriptions for real costs ~165k gas and one transaction per event: measured here
at ~120 events/s even with anvil's unlocked ``eth_sendTransaction`` (no signing in Python),
i.e. ~14 minutes for 100,000 events. Instead a tiny hand-assembled contract is installed
with ``anvil_setCode``: each call emits ``count`` LOG4s with exactly the topics and ABI data
layout of ``BlockhostSubscriptions.SubscriptionCreated`` (the signature comes from
``listener.chain.events``), ``subscriptionId`` running from ``start``, each log from a different
subscriber (a replay meets mostly distinct wallets, and each costs an EIP-55 checksum). The
logs a listener sees are byte-for-byte what the real contract would emit for those values, so
decoding cost is real.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import requests
from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_checksum_address

from listener.chain.events import EVENT_TOPICS
from listener.devkit.devchain import Anvil

#: Where the emitter lives on the bench chain (any address without code works).
EMITTER_ADDRESS = to_checksum_address("0x00000000000000000000000000000000b10c4057")
#: anvil's first unlocked development account sends the calls.
SENDER = to_checksum_address("0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266")
PLAN_ID = 1
#: Subscription ``i`` is bought by the address ``SUBSCRIBER_BASE + i``: a distinct wallet per
#: event, so no cache of checksummed addresses can flatter a path.
SUBSCRIBER_BASE = 0x70997970C51812DC3A010C8F3E27B4FA9CA00000
PAYMENT_TOKEN = to_checksum_address("0x5fbdb2315678afecb367f032d93f642f64180aa3")
PAID_AMOUNT = 3_000_000
#: ``expiresAt`` of subscription ``i`` is ``EXPIRES_BASE + i`` (so every log's data differs).
EXPIRES_BASE = 1_900_000_000
#: ``userEncrypted`` length; 96 bytes matches the decode measurement in peer-listeners.md.
USER_ENCRYPTED = bytes(range(96))
#: Gas per emitted log (LOG4 with 224 data bytes is ~3.7k gas) plus a per-call margin.
GAS_PER_LOG = 4_500
GAS_PER_CALL = 60_000


@dataclass(frozen=True)
class EmittedEvent:
    """What the emitter put on chain for one subscription id (the expected decode)."""

    subscription_id: int
    plan_id: int
    subscriber: str
    expires_at: int
    paid_amount: int
    payment_token: str
    user_encrypted: bytes


def expected_event(subscription_id: int) -> EmittedEvent:
    subscriber = to_checksum_address(f"0x{SUBSCRIBER_BASE + subscription_id:040x}")
    return EmittedEvent(subscription_id, PLAN_ID, subscriber, EXPIRES_BASE + subscription_id,
                        PAID_AMOUNT, PAYMENT_TOKEN, USER_ENCRYPTED)


def _push(value: int, width: int) -> bytes:
    assert 1 <= width <= 32 and value < 1 << (8 * width)
    return bytes([0x5F + width]) + value.to_bytes(width, "big")


def emitter_runtime() -> bytes:
    """EVM runtime code: ``emit(start = calldata[0:32], count = calldata[32:64])``.

    Memory holds the ABI-encoded data template (copied from the code's tail once); per log
    only the ``expiresAt`` word is rewritten, then LOG4(topic0, i, planId, subscriber).
    """
    template = abi_encode(["uint256", "uint256", "address", "bytes"],
                          [EXPIRES_BASE, PAID_AMOUNT, PAYMENT_TOKEN, USER_ENCRYPTED])
    topic0 = int(EVENT_TOPICS["SubscriptionCreated"], 16)
    size = len(template)

    def assemble(loop: int, exit_: int, data_at: int) -> tuple[bytes, int, int]:
        """Labels are PUSH2 immediates, so every pass has the same length."""
        prologue = b"".join([
            _push(size, 2), _push(data_at, 2), _push(0, 1), b"\x39",   # CODECOPY(0, data, size)
            _push(0x20, 1), b"\x35",                                    # count
            _push(0, 1), b"\x35",                                       # i = start
            b"\x80\x91\x01\x90",                                        # DUP1 SWAP2 ADD SWAP1
        ])
        body = b"".join([
            b"\x5b",                                                    # loop: JUMPDEST
            b"\x81\x81\x10\x15", _push(exit_, 2), b"\x57",              # if !(i < end) goto exit
            _push(EXPIRES_BASE, 4), b"\x81\x01", _push(0, 1), b"\x52",  # mstore(0, BASE + i)
            _push(SUBSCRIBER_BASE, 20), b"\x81\x01",                     # BASE + i
            _push(PLAN_ID, 1), b"\x82",                                 # topics 3, 2, 1 (= i)
            _push(topic0, 32), _push(size, 2), _push(0, 1), b"\xa4",    # LOG4(0, size, ...)
            _push(1, 1), b"\x01",                                       # i += 1
            _push(loop, 2), b"\x56",                                    # goto loop
        ])
        code = prologue + body + b"\x5b\x00"                            # exit: JUMPDEST STOP
        return code, len(prologue), len(prologue) + len(body)

    draft, loop_at, exit_at = assemble(0, 0, 0)
    code, *_ = assemble(loop_at, exit_at, len(draft))
    return bytes(code) + template


class JsonRpc:
    """Minimal JSON-RPC with batch support, for setting the bench chain up (not measured)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()

    def call(self, method: str, *params: Any) -> Any:
        return self.batch([(method, list(params))])[0]

    def batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        payload = [{"jsonrpc": "2.0", "id": i, "method": m, "params": p}
                   for i, (m, p) in enumerate(calls)]
        response = self.session.post(self.url, json=payload, timeout=120)
        response.raise_for_status()
        replies = sorted(response.json(), key=lambda r: r["id"])
        errors = [r["error"] for r in replies if r.get("error")]
        if errors:
            raise RuntimeError(f"bench chain setup failed: {errors[0]}")
        return [r.get("result") for r in replies]


@dataclass(frozen=True)
class Workload:
    """Where the events are and how they were produced."""

    address: str
    first_block: int
    last_block: int
    events: int
    events_per_block: int
    seconds: float

    @property
    def blocks(self) -> int:
        return self.last_block - self.first_block + 1


def produce(anvil: Anvil, events: int, *, events_per_block: int = 100) -> Workload:
    """Install the emitter and mine ``events`` logs, ``events_per_block`` per block.

    Automine is switched off and every call is followed by an explicit ``evm_mine``, one HTTP
    request at a time: anvil handles the members of a JSON-RPC batch concurrently, and even
    sequential sends under automine sometimes share a block.
    """
    if events < 1 or events_per_block < 1:
        raise ValueError("events and events_per_block must be positive")
    started = time.perf_counter()
    rpc = JsonRpc(anvil.url)
    rpc.call("anvil_setCode", EMITTER_ADDRESS, "0x" + emitter_runtime().hex())
    rpc.call("evm_setAutomine", False)
    first_block = int(rpc.call("eth_blockNumber"), 16) + 1
    next_id = 1
    while next_id <= events:
        count = min(events_per_block, events - next_id + 1)
        data = abi_encode(["uint256", "uint256"], [next_id, count])
        rpc.call("eth_sendTransaction", {
            "from": SENDER, "to": EMITTER_ADDRESS, "data": "0x" + data.hex(),
            "gas": hex(GAS_PER_CALL + GAS_PER_LOG * count),
        })
        rpc.call("evm_mine")
        next_id += count
    rpc.call("evm_setAutomine", True)
    last_block = int(rpc.call("eth_blockNumber"), 16)
    # The last call must have emitted the last event: a short gas limit would revert silently.
    tail = rpc.call("eth_getLogs", {"address": EMITTER_ADDRESS, "fromBlock": hex(last_block),
                                    "toBlock": hex(last_block)})
    if not tail or int(tail[-1]["topics"][1], 16) != events:
        raise RuntimeError("the emitter did not produce the expected last event")
    expected_blocks = -(-events // events_per_block)
    if last_block - first_block + 1 != expected_blocks:
        raise RuntimeError(f"expected {expected_blocks} blocks of events, anvil mined "
                           f"{last_block - first_block + 1}")
    return Workload(EMITTER_ADDRESS, first_block, last_block, events, events_per_block,
                    time.perf_counter() - started)
