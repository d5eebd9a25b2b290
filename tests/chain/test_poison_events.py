"""Poison events: chain values the journal's 64-bit columns cannot hold never stop the chain.

A ``uint256`` beyond SQLite's signed 64-bit INTEGER used to raise ``OverflowError`` inside the
journal's transaction: the range rolled back and was retried forever. Now an identifier or a
price that does not fit is journaled as a rejected event with its reason, an expiry beyond
:data:`MAX_EXPIRES_AT` is applied as that maximum ("forever") with the exact value kept in the
event's arguments, and the cursor moves on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from eth_abi import encode

from listener.chain.events import EVENT_ABI, EVENT_TOPICS, DecodedLog, decode_log
from listener.chain.journal import Store
from listener.chain.representable import MAX_EXPIRES_AT
from listener.chain.rpc import RpcClient
from listener.chain.scanner import Outcome, scan_once
from listener.config import ChainConfig
from listener.devkit.devchain import Anvil
from tests.support.chain import json_rpc

HUGE = 2**256 - 1
#: Where the test puts its log emitter; the listener follows it as the subscription contract.
CONTRACT = "0x00000000000000000000000000000000000b10c6"
SUBSCRIBER = "0x" + "22" * 20
TOKEN = "0x" + "33" * 20

#: EVM code: LOG4 with topics = calldata[0:128] (four words) and data = calldata[128:].
RAW_LOG4 = bytes.fromhex(
    "606035" "604035" "602035" "600035"   # topics 3, 2, 1, 0 onto the stack
    "608036" "03" "80"                     # len = CALLDATASIZE - 128; DUP1
    "6080" "6000" "37"                     # CALLDATACOPY(0, 128, len)
    "6000" "a4" "00")                      # LOG4(0, len, t0, t1, t2, t3); STOP


def word(value: int | str) -> bytes:
    """One 32-byte word: an int, or a hex string (a topic hash or an address)."""
    return (int(value, 16) if isinstance(value, str) else value).to_bytes(32, "big")


def created_call(sub_id: int, expires_at: int) -> bytes:
    topics = [EVENT_TOPICS["SubscriptionCreated"], sub_id, 1, SUBSCRIBER]
    data = encode(["uint256", "uint256", "address", "bytes"], [expires_at, 5, TOKEN, b"blob"])
    return b"".join(word(t) for t in topics) + data


def extended_call(sub_id: int, new_expires_at: int) -> bytes:
    topics = [EVENT_TOPICS["SubscriptionExtended"], sub_id, 1, SUBSCRIBER]
    return b"".join(word(t) for t in topics) + encode(["uint256", "uint256", "address"],
                                                      [new_expires_at, 5, TOKEN])


class Emitter:
    """Logs shaped exactly like the subscription contract's, with any values, on anvil."""

    def __init__(self, url: str) -> None:
        self.url = url
        json_rpc(url, "anvil_setCode", CONTRACT, "0x" + RAW_LOG4.hex())
        self.sender = json_rpc(url, "eth_accounts")[0]

    def emit(self, calldata: bytes) -> None:
        json_rpc(self.url, "eth_sendTransaction", {"from": self.sender, "to": CONTRACT,
                                                   "data": "0x" + calldata.hex(),
                                                   "gas": hex(100_000)})

    def mine(self, blocks: int) -> None:
        json_rpc(self.url, "anvil_mine", hex(blocks))

    def head(self) -> int:
        return int(json_rpc(self.url, "eth_blockNumber"), 16)


def drain(rpc: RpcClient, store: Store, config: ChainConfig) -> list[Outcome]:
    seen = []
    for _ in range(50):
        outcome = scan_once(rpc, store, config).outcome
        seen.append(outcome)
        if outcome in (Outcome.NOTHING_NEW, Outcome.HALTED):
            return seen
    raise AssertionError(f"the scanner did not settle: {seen[-5:]}")


def test_the_scanner_journals_poison_and_moves_on(anvil: Anvil, tmp_path: Path) -> None:
    chain = Emitter(anvil.url)
    config = ChainConfig(rpc_urls=[anvil.url], subscription_contract=CONTRACT,
                         nft_contract=CONTRACT, confirmations=2, max_block_range=50)
    store = Store.open(tmp_path / "chain.db")
    rpc = RpcClient([anvil.url])
    try:
        chain.emit(created_call(1, HUGE))               # forever
        chain.emit(created_call(2, 2_000_000_000))
        chain.emit(extended_call(2, HUGE))              # extended to forever
        drain(rpc, store, config)                       # the newest two are not confirmed yet
        chain.emit(created_call(HUGE, 2_000_000_000))   # an id no INTEGER column holds
        chain.emit(created_call(3, 2_000_000_001))      # and the chain goes on
        chain.mine(3)
        assert drain(rpc, store, config)[-1] is Outcome.NOTHING_NEW

        state = store.chain_state()
        head = chain.head()
        assert (state.cursor, state.applied_block, state.halted_reason) == (head, head - 2, None)
        expiries = {sub.id: sub.expires_at for sub in store.subscriptions()}
        assert expiries == {1: MAX_EXPIRES_AT, 2: MAX_EXPIRES_AT, 3: 2_000_000_001}
        rows = store.conn.execute(
            "SELECT name, subscription_id, args, rejected FROM events ORDER BY block_number")
        events = [(r[0], r[1], json.loads(r[2]), r[3]) for r in rows]
        assert len(events) == 5
        assert events[0][2]["expiresAt"] == str(HUGE)   # the exact chain value is kept
        assert events[2][2]["newExpiresAt"] == str(HUGE)
        name, column, args, rejected = events[3]
        assert (name, column, args["subscriptionId"]) == ("SubscriptionCreated", None, str(HUGE))
        assert rejected is not None and "subscriptionId" in rejected and "64-bit" in rejected
        assert [e[3] for e in events if e is not events[3]] == [None] * 4
    finally:
        store.close()


# -- every stored field of every event, straight into the journal -------------------------

_SAMPLES: dict[str, Any] = {"address": TOKEN, "bool": True, "string": "plan", "bytes": b"x",
                            "uint8": 6}


def raw_log(name: str, huge_field: str, *, block: int, index: int = 0) -> dict[str, Any]:
    """``name``'s log with ``huge_field`` at its type's maximum (2**256 - 1; 255 for a uint8),
    subscription 7, plan 1 and small values elsewhere."""
    indexed, data_fields = EVENT_ABI[name]
    small = {"subscriptionId": 7, "planId": 1}

    def value(field: str, typ: str) -> Any:
        if field == huge_field:
            return 2 ** int(typ[4:]) - 1
        return small.get(field, _SAMPLES.get(typ, 1))

    topics = [EVENT_TOPICS[name]]
    for field, typ in indexed:
        raw = value(field, typ)
        topics.append("0x" + (raw[2:].rjust(64, "0") if typ == "address" else word(raw).hex()))
    data = encode([t for _, t in data_fields], [value(f, t) for f, t in data_fields])
    return {"blockNumber": hex(block), "blockHash": "0x" + f"{block:064x}",
            "transactionHash": "0x" + f"{block * 100 + index:064x}", "logIndex": hex(index),
            "address": CONTRACT, "topics": topics, "data": "0x" + data.hex()}


EXPIRIES = {"expiresAt", "newExpiresAt"}
#: (event, uint field) pairs; the expiries last, so subscription 7 ends extended to "forever".
CASES = sorted(((name, field) for name, (indexed, data_fields) in EVENT_ABI.items()
                for field, typ in (*indexed, *data_fields) if typ.startswith("uint")),
               key=lambda case: case[1] in EXPIRIES)


def poison_logs() -> list[DecodedLog]:
    """A plan and a purchase to refer to, then one log per (event, uint field) at its maximum."""
    base = [decode_log(raw_log("PlanCreated", "", block=1)),
            decode_log(raw_log("SubscriptionCreated", "", block=1, index=1))]
    return base + [decode_log(raw_log(name, field, block=10 + i), contract=CONTRACT)
                   for i, (name, field) in enumerate(CASES)]


def check_contained(store: Store, to_block: int) -> None:
    assert store.chain_state().applied_block == to_block
    rows = store.conn.execute("SELECT name, args, rejected FROM events WHERE block_number >= 10"
                              " ORDER BY block_number").fetchall()
    assert len(rows) == len(CASES)
    for (name, field), row in zip(CASES, rows, strict=True):
        if field in {"subscriptionId", "planId", "pricePerDayUsdCents"}:
            assert row["rejected"] and field in row["rejected"], (name, field)
        else:
            assert row["rejected"] is None, (name, field, row["rejected"])
        assert str(json.loads(row["args"])[field]) == str(2 ** (8 if field == "decimals"
                                                                  else 256) - 1)
    [sub] = store.subscriptions()
    assert (sub.id, sub.cancelled, sub.expires_at) == (7, False, MAX_EXPIRES_AT)
    prices = store.conn.execute("SELECT id, price_cents FROM plans").fetchall()
    assert [tuple(p) for p in prices] == [(1, 1)]


@pytest.mark.parametrize("path", ["confirmed", "unconfirmed", "replayed"])
def test_no_field_of_any_event_can_stop_the_journal(tmp_path: Path, path: str) -> None:
    store = Store.open(tmp_path / "chain.db")
    logs = poison_logs()
    end = 10 + len(CASES)
    if path == "confirmed":
        store.journal_batch(logs, to_block=end, to_hash="0xee", to_timestamp=5, block_times={})
    elif path == "unconfirmed":
        store.journal_unconfirmed(logs, to_block=end, to_hash="0xee", block_times={})
        store.promote(end, block_hash="0xee", timestamp=5)
    else:
        store.journal_batch([], to_block=end, to_hash="0xee", to_timestamp=5, block_times={})
        store.journal_replayed(logs, block_times={})
    check_contained(store, end)
    store.close()
