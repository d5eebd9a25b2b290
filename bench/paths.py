"""The replay paths being compared: same chain range, same rows journaled, different code.

Every SQL path writes the same ``events`` rows (the listener's schema, created by
:class:`listener.chain.journal.Store`) into a fresh SQLite file on disk, so the measured difference
is fetching + decoding + committing, nothing else. Each path returns how many events it
journaled; :func:`journaled_rows` reads them back for the correctness check.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from eth_abi.abi import decode as abi_decode
from eth_utils.address import to_checksum_address
from web3 import Web3

from listener.chain.contracts import load_abi
from listener.chain.events import EVENT_TOPICS, DecodedLog, args_to_json, decode_log
from listener.chain.journal import Store
from listener.chain.prefetch import LogPrefetcher
from listener.chain.rpc import RpcClient
from listener.chain.scanner import Outcome, scan_once
from listener.config import ChainConfig
from provisioner.storage.sqlite_db import transaction
from provisioner.storage.wal_checkpoint import WalCheckpointer

INSERT_EVENT = (
    "INSERT INTO events (block_number, block_hash, tx_hash, log_index, address, name,"
    " subscription_id, plan_id, args, rejected) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (block_number, log_index, block_hash) DO NOTHING"
)
#: Every events row a path wrote, in chain order (what the paths are compared by).
ROWS_IN_CHAIN_ORDER = ("SELECT block_number, block_hash, tx_hash, log_index, address, name,"
                       " subscription_id, plan_id, args, rejected"
                       " FROM events ORDER BY block_number, log_index")

Row = tuple[Any, ...]


@dataclass(frozen=True)
class Replay:
    """What to replay: one contract's logs over ``first_block..last_block``."""

    url: str
    address: str
    first_block: int
    last_block: int
    block_range: int

    def ranges(self) -> Iterator[tuple[int, int]]:
        """Consecutive ``eth_getLogs`` windows of at most ``block_range`` blocks."""
        start = self.first_block
        while start <= self.last_block:
            end = min(self.last_block, start + self.block_range - 1)
            yield start, end
            start = end + 1


def _web3_row(log: Any) -> Row:
    """The events row from a web3 ``EventData`` (same values our decoder produces)."""
    args = dict(log["args"])
    return (log["blockNumber"], log["blockHash"].to_0x_hex(), log["transactionHash"].to_0x_hex(),
            log["logIndex"], str(log["address"]).lower(), log["event"],
            args.get("subscriptionId"), args.get("planId"),
            json.dumps(args_to_json(args), sort_keys=True), None)


def _decoded_row(entry: DecodedLog) -> Row:
    return (entry.block_number, entry.block_hash, entry.tx_hash, entry.log_index, entry.address,
            entry.name, entry.subscription_id, entry.plan_id,
            json.dumps(args_to_json(entry.args), sort_keys=True), entry.rejected)


def _web3_event(replay: Replay) -> Any:
    w3 = Web3(Web3.HTTPProvider(replay.url, request_kwargs={"timeout": 120}))
    contract = w3.eth.contract(address=Web3.to_checksum_address(replay.address),
                               abi=load_abi("BlockhostSubscriptions"))
    return contract.events.SubscriptionCreated


def web3_naive(replay: Replay, db: Path) -> int:
    """(a) ``contract.events.X.get_logs`` per range, one INSERT + COMMIT per event."""
    event = _web3_event(replay)
    store = Store.open(db)
    try:
        count = 0
        for start, end in replay.ranges():
            for log in event.get_logs(from_block=start, to_block=end):
                with transaction(store.conn):
                    store.conn.execute(INSERT_EVENT, _web3_row(log))
                count += 1
        return count
    finally:
        store.close()


def web3_batched(replay: Replay, db: Path) -> int:
    """(b) web3's contract-event decoding, but one ``executemany`` transaction per range."""
    event = _web3_event(replay)
    return _executemany_per_range(replay, db, lambda _, start, end: [
        _web3_row(log) for log in event.get_logs(from_block=start, to_block=end)])


def _executemany_per_range(replay: Replay, db: Path,
                           rows_for: Callable[[int, int, int], list[Row]]) -> int:
    """The batched baselines' shared loop: ``rows_for(request_id, start, end)`` per range,
    each range's rows in one ``executemany`` transaction; returns the rows written."""
    store = Store.open(db)
    try:
        count = 0
        for request_id, (start, end) in enumerate(replay.ranges(), start=1):
            rows = rows_for(request_id, start, end)
            with transaction(store.conn):
                store.conn.executemany(INSERT_EVENT, rows)
            count += len(rows)
        return count
    finally:
        store.close()


def ours_journal(replay: Replay, db: Path) -> int:
    """(c) The listener's own scan loop: ``listener.chain.scanner.scan_once`` (head, reorg check,
    one ``eth_getLogs`` + end header per step through ``RpcClient``, ``decode_log``,
    ``Store.journal_batch``: events, facts and cursor in one transaction per range), called
    until the cursor reaches the last block, exactly as the daemon catches up: with the next
    range prefetched (``LogPrefetcher``) and the WAL checkpointed in the background
    (``WalCheckpointer``)."""
    rpc = RpcClient([replay.url])
    store = Store.open(db)
    chain = ChainConfig(rpc_urls=[replay.url], subscription_contract=replay.address,
                        start_block=replay.first_block, confirmations=0,
                        max_block_range=replay.block_range)
    prefetch = LogPrefetcher.for_listener(rpc, address=replay.address,
                                          max_block_range=replay.block_range)
    new = 0
    try:
        with WalCheckpointer(db):
            while True:
                cursor = store.chain_state().cursor
                if cursor is not None and cursor >= replay.last_block:
                    break
                result = scan_once(rpc, store, chain, prefetch=prefetch)
                if result.outcome is not Outcome.PROGRESSED:
                    raise RuntimeError(f"scan stopped early: {result.outcome.name}")
                new += result.new_events
        return new
    finally:
        prefetch.discard()
        store.close()


def ours_executemany(replay: Replay, db: Path) -> int:
    """(c') Same fetch and decode, but only the events rows via one ``executemany`` per range:
    the cost of journaling without applying facts row by row."""
    rpc = RpcClient([replay.url])
    return _executemany_per_range(replay, db, lambda _, start, end: [
        _decoded_row(decode_log(log, contract=replay.address))
        for log in rpc.get_logs(replay.address, start, end)])


def _get_logs_request(replay: Replay, request_id: int, start: int, end: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "eth_getLogs",
            "params": [{"address": replay.address, "fromBlock": hex(start),
                        "toBlock": hex(end)}]}


def _post_get_logs(session: requests.Session, replay: Replay, request_id: int, start: int,
                   end: int) -> list[dict[str, Any]]:
    """One plain ``eth_getLogs`` POST, parsed by requests' stdlib JSON."""
    response = session.post(replay.url, json=_get_logs_request(replay, request_id, start, end),
                            timeout=120)
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()["result"]
    return result


_CREATED_TOPIC_TYPES = ("uint256", "uint256", "address")
_CREATED_DATA_TYPES = ("uint256", "uint256", "address", "bytes")


def _eth_abi_row(log: dict[str, Any]) -> Row:
    """A SubscriptionCreated log decoded the textbook way: every field through eth_abi."""
    topics = log["topics"]
    subscription_id, plan_id, subscriber = abi_decode(
        _CREATED_TOPIC_TYPES, b"".join(bytes.fromhex(t[2:]) for t in topics[1:4]))
    expires_at, paid, token, blob = abi_decode(_CREATED_DATA_TYPES, bytes.fromhex(log["data"][2:]))
    args = {"subscriptionId": subscription_id, "planId": plan_id,
            "subscriber": to_checksum_address(subscriber), "expiresAt": expires_at,
            "paidAmount": paid, "paymentToken": to_checksum_address(token),
            "userEncrypted": blob}
    return (int(log["blockNumber"], 16), log["blockHash"].lower(),
            log["transactionHash"].lower(), int(log["logIndex"], 16), log["address"].lower(),
            "SubscriptionCreated", subscription_id, plan_id,
            json.dumps(args_to_json(args), sort_keys=True), None)


def eth_abi_executemany(replay: Replay, db: Path) -> int:
    """(c'') The recipe issue 7 quotes at 28,000-33,000 events/s on the machine its target
    was set on: raw ``eth_getLogs`` (requests + stdlib JSON), ``eth_abi.decode`` of each
    log's topics and data, one ``executemany`` of the events rows per range, one thread.
    Measured beside ``ours-journal``, it shows what that recipe does on this host."""
    created_topic = EVENT_TOPICS["SubscriptionCreated"]
    session = requests.Session()
    return _executemany_per_range(replay, db, lambda request_id, start, end: [
        _eth_abi_row(log) for log in _post_get_logs(session, replay, request_id, start, end)
        if log["topics"][0].lower() == created_topic])


def transport_ceiling(replay: Replay, db: Path) -> int:
    """(d) The ceiling: POST ``eth_getLogs`` and parse the JSON, nothing else."""
    session = requests.Session()
    return sum(len(_post_get_logs(session, replay, request_id, start, end))
               for request_id, (start, end) in enumerate(replay.ranges(), start=1))


def transport_ceiling_orjson(replay: Replay, db: Path) -> int:
    """(d') The ceiling with the fastest client we know: each reply read in one buffered
    read (as ``RpcClient`` does) and parsed with orjson, the cyclic GC paused as during a
    scan step. Nothing that journals can beat this; it is the stricter yardstick."""
    import gc

    import orjson

    session = requests.Session()
    count = 0
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for request_id, (start, end) in enumerate(replay.ranges(), start=1):
            response = session.post(replay.url,
                                    json=_get_logs_request(replay, request_id, start, end),
                                    timeout=120, stream=True)
            response.raise_for_status()
            count += len(orjson.loads(response.raw.read())["result"])
    finally:
        if was_enabled:
            gc.enable()
    return count


@dataclass(frozen=True)
class Scenario:
    """One benchmarked path: a short key, the label in the table, and the runner."""

    key: str
    label: str
    run: Callable[[Replay, Path], int]
    writes_db: bool = True


PATHS: tuple[Scenario, ...] = (
    Scenario("web3-naive", "web3 get_logs + commit per event", web3_naive),
    Scenario("web3-batched", "web3 get_logs + batched commit", web3_batched),
    Scenario("ours-journal", "the listener's scan_once loop (getLogs + decode + journal_batch)",
             ours_journal),
    Scenario("ours-executemany", "raw getLogs + decode_log + executemany", ours_executemany),
    Scenario("eth-abi-executemany", "raw getLogs + eth_abi.decode + executemany (issue's recipe)",
             eth_abi_executemany),
    Scenario("ceiling", "raw getLogs + JSON parse only (ceiling)", transport_ceiling,
             writes_db=False),
    Scenario("ceiling-orjson", "raw getLogs, one read + orjson, GC paused (strict ceiling)",
             transport_ceiling_orjson, writes_db=False),
)
PATH_KEYS = tuple(p.key for p in PATHS)
BASELINE = "web3-naive"


def iter_journaled_rows(db: Path) -> Iterator[Row]:
    """The events rows a path wrote, in chain order, streamed (the check must not be what
    dominates the bench process's peak RSS)."""
    conn = sqlite3.connect(str(db))
    try:
        for row in conn.execute(ROWS_IN_CHAIN_ORDER):
            yield tuple(row)
    finally:
        conn.close()


def journaled_rows(db: Path) -> list[Row]:
    """All events rows a path wrote, in chain order (for small runs and tests)."""
    return list(iter_journaled_rows(db))
