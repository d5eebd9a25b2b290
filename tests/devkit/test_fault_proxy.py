"""The fault-injecting proxy itself, and exactly-once log delivery through it.

Real anvil, real HTTP on loopback: with faults at 20% of requests (every shape the proxy
knows), provider span/result limits and failover across a wrong-chain, a lagging and a
healthy endpoint, a getLogs cursor loop sees every log exactly once.
"""

from __future__ import annotations

import random

import pytest
import requests

from listener.chain.ranges import RangeController, parse_range_error
from listener.chain.rpc import RpcClient
from listener.devkit.devchain import Anvil
from listener.devkit.fault_proxy import ALL_FAULTS, RANGE_FAULTS, RpcProxy
from listener.devkit.log_emitter import EMITTER_ADDRESS, EMITTER_TOPIC

CHAIN_ID = 31337


def _per_block() -> list[int]:
    rng = random.Random(11)
    counts = []
    for _ in range(90):
        counts.append(0 if rng.random() < 0.4 else rng.randint(1, 6))
    return counts


#: emitter logs per block on the ``chain`` fixture (conftest.py)
PER_BLOCK = _per_block()


def raw(url: str, method: str, *params: object) -> dict:
    return requests.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method,
                                    "params": list(params)}, timeout=10).json()


def key(entry: dict) -> tuple[int, int, str, str]:
    return (int(entry["blockNumber"], 16), int(entry["logIndex"], 16), entry["blockHash"],
            entry["topics"][1])


def truth(url: str) -> list[tuple[int, int, str, str]]:
    logs = raw(url, "eth_getLogs", {"fromBlock": "0x0", "toBlock": "latest",
                                    "address": EMITTER_ADDRESS})["result"]
    return [key(entry) for entry in logs]


def scan(rpc: RpcClient, controller: RangeController, head: int) -> list[tuple]:
    """The scanner's cursor loop: advance to exactly the last block each call covered."""
    got: list[tuple] = []
    cursor = -1
    while cursor < head:
        batch = rpc.fetch_logs(cursor + 1, head, address=EMITTER_ADDRESS,
                               topics=[EMITTER_TOPIC], controller=controller)
        logs, last = batch.logs, batch.to_block
        assert cursor < last <= head
        assert all(cursor < int(e["blockNumber"], 16) <= last for e in logs)
        got += [key(e) for e in logs]
        cursor = last
    return got


# -- the proxy's own behaviour --------------------------------------------------------------


def test_lagging_node_view(chain: Anvil) -> None:
    head = int(raw(chain.url, "eth_blockNumber")["result"], 16)
    with RpcProxy(chain.url, lag_blocks=7) as lag:
        assert int(raw(lag.url, "eth_blockNumber")["result"], 16) == head - 7
        assert raw(lag.url, "eth_getBlockByNumber", hex(head - 6), False)["result"] is None
        latest = raw(lag.url, "eth_getBlockByNumber", "latest", False)["result"]
        assert int(latest["number"], 16) == head - 7
        logs = raw(lag.url, "eth_getLogs", {"fromBlock": "0x0", "toBlock": hex(head)})["result"]
        assert {int(e["blockNumber"], 16) for e in logs} <= set(range(head - 6))
        lag.settings.lag_mode = "error"
        error = raw(lag.url, "eth_getLogs", {"fromBlock": "0x0", "toBlock": hex(head)})["error"]
        assert "beyond current head" in error["message"]


def test_other_chain_and_batches(chain: Anvil) -> None:
    with RpcProxy(chain.url, chain_id=10) as other:
        assert raw(other.url, "eth_chainId")["result"] == "0xa"
        body = requests.post(other.url, json=[
            {"jsonrpc": "2.0", "id": 5, "method": "eth_chainId", "params": []},
            {"jsonrpc": "2.0", "id": 6, "method": "net_version", "params": []},
        ], timeout=10).json()
        assert {r["id"]: r["result"] for r in body} == {5: "0xa", 6: "10"}


def test_http_faults_look_like_providers(chain: Anvil) -> None:
    with RpcProxy(chain.url, schedule=["http_429", "http_503", "drop", "truncate"]) as proxy:
        first = requests.post(proxy.url, json={"jsonrpc": "2.0", "id": 1,
                                               "method": "eth_blockNumber", "params": []})
        assert first.status_code == 429 and first.json()["error"]["code"] == 429
        second = requests.post(proxy.url, json={}, timeout=10)
        assert second.status_code == 503 and "Service Unavailable" in second.text
        for _ in range(2):
            with pytest.raises((requests.ConnectionError,
                                requests.exceptions.ChunkedEncodingError)):
                requests.post(proxy.url, json={}, timeout=10).json()
        assert proxy.faults == {"http_429": 1, "http_503": 1, "drop": 1, "truncate": 1}


@pytest.mark.parametrize("fault", RANGE_FAULTS)
def test_size_refusals_parse_as_intended(chain: Anvil, fault: str) -> None:
    with RpcProxy(chain.url, schedule=[fault]) as proxy:
        error = raw(proxy.url, "eth_getLogs", {"fromBlock": "0x1", "toBlock": "0x10"})["error"]
        hint = parse_range_error(error["message"], error.get("data"))
        assert hint is not None and hint.kind == "result_size"
        if fault != "infura_results":
            assert (hint.suggested_from, hint.suggested_to) == (1, 8)


def test_span_refusals_parse_as_block_range(chain: Anvil) -> None:
    with RpcProxy(chain.url, seed=4, max_range=10) as proxy:
        seen = set()
        for _ in range(40):
            error = raw(proxy.url, "eth_getLogs", {"fromBlock": "0x1", "toBlock": "0x20"})["error"]
            hint = parse_range_error(error["message"])
            assert hint is not None and hint.kind == "block_range"
            assert hint.max_span in (None, 10)
            seen.add(error["message"])
        assert len(seen) == 5  # every span shape was exercised
        ok = raw(proxy.url, "eth_getLogs", {"fromBlock": "0x1", "toBlock": "0xa"})
        assert "result" in ok


def test_unknown_fault_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        RpcProxy("http://127.0.0.1:1", fault_kinds=("nope",))


# -- exactly once, end to end ------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_log_exactly_once_with_20_percent_faults(chain: Anvil, seed: int) -> None:
    expected = truth(chain.url)
    head = len(PER_BLOCK)
    assert len(expected) == sum(PER_BLOCK) > 150
    with RpcProxy(chain.url, seed=seed, fault_rate=0.2, max_range=25, max_results=20,
                  timeout_sleep=1.0) as proxy:
        rpc = RpcClient([proxy.url], expected_chain_id=CHAIN_ID, timeout=0.5, attempts=10,
                        backoff_initial=0.002, backoff_max=0.02)
        controller = RangeController(60, grow_after=2)
        assert scan(rpc, controller, head) == expected
        injected = sum(proxy.faults.values())
        assert injected >= 0.1 * proxy.requests
        assert len(proxy.faults) >= 5  # several different shapes hit this run
    # learned: the stated cap, or (only bare refusals seen) still bisecting towards it
    assert controller.ceiling <= 25 or controller.probing


def test_failover_across_wrong_chain_lagging_and_flaky_nodes(chain: Anvil) -> None:
    expected = truth(chain.url)
    head = len(PER_BLOCK)
    with (RpcProxy(chain.url, chain_id=1) as wrong,
          RpcProxy(chain.url, lag_blocks=30, seed=8, fault_rate=0.2) as lagging,
          RpcProxy(chain.url, seed=9, fault_rate=0.2, max_results=30, timeout_sleep=1.0)
          as flaky):
        rpc = RpcClient([wrong.url, lagging.url, flaky.url], expected_chain_id=CHAIN_ID,
                        timeout=0.5, attempts=12, backoff_initial=0.002, backoff_max=0.02)
        heads = [rpc.block_number() for _ in range(20)]
        assert scan(rpc, RangeController(40), head) == expected
        heads += [rpc.block_number() for _ in range(20)]
        assert heads == sorted(heads) and heads[-1] == head  # never rewound by the lagging node
        assert wrong.methods["eth_getLogs"] == 0 and wrong.methods["eth_chainId"] >= 1
        assert lagging.methods["eth_getLogs"] >= 1 and flaky.methods["eth_getLogs"] >= 1
        assert sum(rpc.error_counts.values()) >= 3


def test_all_fault_kinds_are_known() -> None:
    assert len(set(ALL_FAULTS)) == len(ALL_FAULTS) == 12
