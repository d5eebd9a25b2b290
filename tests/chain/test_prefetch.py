"""LogPrefetcher: the next confirmed range is fetched ahead and handed out only when it is
exactly the range asked for; the scan loop with it journals every log exactly once, through
a fault-injecting proxy in front of a real anvil."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from listener.chain.journal import Store
from listener.chain.prefetch import LogPrefetcher
from listener.chain.ranges import RangeController
from listener.chain.rpc import RpcClient
from listener.chain.scanner import Outcome, scan_once
from listener.config import ChainConfig
from listener.devkit.devchain import Anvil
from listener.devkit.fault_proxy import RpcProxy
from listener.devkit.log_emitter import EMITTER_ADDRESS
from tests.support.chain import json_rpc

CHAIN_ID = 31337
#: emitter logs per block on the ``chain`` fixture (conftest.py)
PER_BLOCK = [3, 0, 1, 4, 0, 0, 2, 5, 1, 0] * 6


def _head(url: str) -> int:
    return int(json_rpc(url, "eth_blockNumber"), 16)


def _truth(url: str) -> list[tuple[int, int, str]]:
    logs = json_rpc(url, "eth_getLogs", {"fromBlock": "0x0", "toBlock": "latest",
                                         "address": EMITTER_ADDRESS})
    return [(int(e["blockNumber"], 16), int(e["logIndex"], 16), e["blockHash"].lower())
            for e in logs]


def _prefetcher(url: str, span: int = 5) -> LogPrefetcher:
    return LogPrefetcher(RpcClient([url], expected_chain_id=CHAIN_ID), address=EMITTER_ADDRESS,
                         controller=RangeController(span))


def test_the_range_asked_for_is_handed_out_once(chain: Anvil) -> None:
    head = _head(chain.url)
    prefetch = _prefetcher(chain.url)
    prefetch.start(1, head)
    batch = prefetch.take(1, head)
    assert batch is not None and (batch.from_block, batch.to_block) == (1, 5)
    direct = prefetch.rpc.fetch_logs_once(1, 5, address=EMITTER_ADDRESS)
    assert batch.logs == direct.logs and batch.to_header == direct.to_header
    assert prefetch.take(1, head) is None  # nothing is pending any more
    assert (prefetch.used, prefetch.discarded) == (1, 0)


def test_a_range_starting_elsewhere_is_dropped(chain: Anvil) -> None:
    head = _head(chain.url)
    prefetch = _prefetcher(chain.url)
    prefetch.start(1, head)
    assert prefetch.take(2, head) is None
    assert (prefetch.used, prefetch.discarded) == (0, 1)


def test_a_range_past_the_confirmed_head_is_dropped(chain: Anvil) -> None:
    """The confirmed head moved back (e.g. failover to a node that is behind)."""
    head = _head(chain.url)
    prefetch = _prefetcher(chain.url)
    prefetch.start(1, head)
    assert prefetch.take(1, 3) is None
    assert prefetch.discarded == 1


def test_a_failed_fetch_is_dropped_for_the_direct_path_to_redo() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    rpc = RpcClient([f"http://127.0.0.1:{port}"], attempts=1)
    prefetch = LogPrefetcher(rpc, address=EMITTER_ADDRESS, controller=RangeController(5))
    prefetch.start(1, 10)
    assert prefetch.take(1, 10) is None
    assert prefetch.discarded == 1


def test_a_controller_other_than_the_prefetchers_is_refused(chain: Anvil, tmp_path: Path) -> None:
    prefetch = _prefetcher(chain.url)
    store = Store.open(tmp_path / "db.sqlite3")
    config = ChainConfig(rpc_urls=[chain.url], subscription_contract=EMITTER_ADDRESS)
    with pytest.raises(ValueError, match="range controller"):
        scan_once(prefetch.rpc, store, config, RangeController(5), prefetch=prefetch)


@pytest.mark.parametrize("seed", [4, 5])
def test_scan_with_prefetch_journals_every_log_once_through_faults(
        chain: Anvil, tmp_path: Path, seed: int) -> None:
    expected = _truth(chain.url)
    head = _head(chain.url)
    assert len(expected) == sum(PER_BLOCK)
    with RpcProxy(chain.url, seed=seed, fault_rate=0.2, max_range=9, max_results=12,
                  timeout_sleep=1.0) as proxy:
        rpc = RpcClient([proxy.url], expected_chain_id=CHAIN_ID, timeout=0.5, attempts=10,
                        backoff_initial=0.002, backoff_max=0.02)
        controller = RangeController(20, grow_after=2)
        prefetch = LogPrefetcher(rpc, address=EMITTER_ADDRESS, controller=controller)
        config = ChainConfig(rpc_urls=[proxy.url], subscription_contract=EMITTER_ADDRESS,
                             start_block=0, confirmations=0, max_block_range=20)
        store = Store.open(tmp_path / "db.sqlite3")
        for _ in range(500):
            state = store.chain_state()
            if state.cursor is not None and state.cursor >= head:
                break
            try:
                result = scan_once(rpc, store, config, controller, prefetch=prefetch)
            except Exception:  # noqa: BLE001 - the daemon retries a failed step the same way
                continue
            assert result.outcome is Outcome.PROGRESSED
        prefetch.discard()
        assert sum(proxy.faults.values()) > 0
    rows = store.conn.execute("SELECT block_number, log_index, block_hash FROM events"
                              " ORDER BY block_number, log_index").fetchall()
    assert [tuple(r) for r in rows] == expected
    assert prefetch.used > 0
