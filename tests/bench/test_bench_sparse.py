"""The sparse-scan and RSS benchmarks: the synthetic node's answers, and both CLIs end to end.

Correctness only (who reached the head, how many requests, one row per size): nothing here
looks at how long anything took.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from bench.rss import main as rss_main
from bench.sparse import SynthNode, synth_node
from bench.sparse import main as sparse_main
from bench.synthchain import GENESIS_TIME, SynthChain
from listener.chain.ranges import RangeHint
from listener.chain.rpc import RangeTooLargeError, RpcClient, classify_rpc_error
from tests.support.paths import REPO_ROOT

BLOCKS = 1_000
CAP = 100


@pytest.fixture
def node(tmp_path: Path) -> Iterator[SynthNode]:
    with synth_node(tmp_path, blocks=BLOCKS, max_range=CAP, error_style="stated") as running:
        yield running


def _post(node: SynthNode, payload: Any) -> Any:
    response = requests.post(node.url, json=payload, timeout=10)
    response.raise_for_status()
    return response.json()


def test_synthchain_serves_a_consistent_hash_chain(node: SynthNode) -> None:
    replies = _post(node, [
        {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
        {"jsonrpc": "2.0", "id": 2, "method": "eth_blockNumber", "params": []},
        {"jsonrpc": "2.0", "id": 3, "method": "eth_getBlockByNumber", "params": ["0x1f3", False]},
        {"jsonrpc": "2.0", "id": 4, "method": "eth_getBlockByNumber", "params": ["0x1f4", False]},
        {"jsonrpc": "2.0", "id": 5, "method": "eth_getBlockByNumber",
         "params": ["finalized", False]},
        {"jsonrpc": "2.0", "id": 6, "method": "eth_getBlockByNumber",
         "params": [hex(BLOCKS + 1), False]},
    ])
    by_id = {r["id"]: r["result"] for r in replies}
    assert int(by_id[1], 16) == 31337
    assert int(by_id[2], 16) == BLOCKS
    parent, child = by_id[3], by_id[4]
    assert int(parent["number"], 16) == 499 and int(child["number"], 16) == 500
    assert child["parentHash"] == parent["hash"] != child["hash"]
    assert int(child["timestamp"], 16) - int(parent["timestamp"], 16) == 12
    assert int(child["timestamp"], 16) == GENESIS_TIME + 12 * 500
    assert int(by_id[5]["number"], 16) == BLOCKS
    assert by_id[6] is None  # beyond the head, as a node that does not have it yet

    # The listener's own client reads the same chain (chain id verified, headers batched).
    rpc = RpcClient([node.url], expected_chain_id=31337)
    assert rpc.block_number() == BLOCKS
    assert rpc.get_block(500)["hash"] == child["hash"]
    batch = rpc.fetch_logs_once(401, 500, address="0x" + "11" * 20)
    assert batch.logs == [] and batch.to_header["hash"] == child["hash"]


def test_synthchain_refuses_ranges_over_its_cap_like_a_provider(node: SynthNode) -> None:
    query = {"address": "0x" + "11" * 20, "fromBlock": hex(0), "toBlock": hex(CAP)}
    reply = _post(node, {"jsonrpc": "2.0", "id": 7, "method": "eth_getLogs", "params": [query]})
    error = reply["error"]
    assert error["code"] == -32614
    # The listener's classifier must read it as a block-span limit of exactly the cap.
    classified = classify_rpc_error("eth_getLogs", error["code"], error["message"])
    assert isinstance(classified, RangeTooLargeError)
    assert classified.hint == RangeHint("block_range", max_span=CAP)

    query["toBlock"] = hex(CAP - 1)  # exactly CAP blocks: served
    reply = _post(node, {"jsonrpc": "2.0", "id": 8, "method": "eth_getLogs", "params": [query]})
    assert reply["result"] == []
    stats = node.stats()
    assert stats["refused"] == 1 and stats["calls"]["eth_getLogs"] == 2
    assert stats["http_requests"] == 2


def test_bare_error_style_gives_no_span() -> None:
    chain = SynthChain(50, max_range=10, error_style="bare")
    reply = chain.handle({"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs",
                          "params": [{"fromBlock": "0x0", "toBlock": "0x31"}]})
    classified = classify_rpc_error("eth_getLogs", reply["error"]["code"],
                                    reply["error"]["message"])
    assert isinstance(classified, RangeTooLargeError)
    assert classified.hint == RangeHint("block_range")
    assert chain.handle({"jsonrpc": "2.0", "id": 2, "method": "eth_nope"})["error"]["code"] \
        == -32601


def _run(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *argv], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout, check=False)


def test_sparse_bench_reaches_the_head_with_fewer_requests() -> None:
    done = _run("-m", "bench.sparse", "--blocks", "50000", "--repeat", "1", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    paths = {p["key"]: p for p in report["paths"]}
    ours, base = paths["ours"], paths["web3-fixed"]
    assert ours["reached_head"] and ours["cursor"] == report["head"] == 50_000
    assert base["reached_head"] and base["cursor"] == 50_000
    # ours learned the provider's cap from one refusal and then used it for every request.
    assert ours["refused_get_logs"] == 1 and ours["final_span"] == 10_000
    assert ours["http_requests"] < base["http_requests"]
    assert base["calls"]["eth_getLogs"] == 26  # 50,001 blocks in 2,000-block chunks


def test_sparse_bench_rejects_a_baseline_chunk_over_the_cap(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        sparse_main(["--blocks", "1000", "--max-range", "100", "--chunk", "500"])
    assert exited.value.code == 2
    assert "--chunk 500" in capsys.readouterr().err


@pytest.mark.slow  # ~25-40 s on the shared 2 cores: four fresh interpreters importing web3
def test_rss_bench_reports_one_row_per_size() -> None:
    done = _run("-m", "bench.rss", "--events", "2000,4000", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["sizes"] == [2000, 4000]
    assert {p["key"] for p in report["paths"]} == {"ours-journal", "web3-batched"}
    for path in report["paths"]:
        assert [row["events"] for row in path["rows"]] == [2000, 4000]
        for row in path["rows"]:
            assert row["peak_rss_mb"] >= row["rss_after_import_mb"] > 0
        assert path["flat"] is None  # both sizes fit in one response: not judged
        assert path["slope_mb_per_10k_events"] is not None


def test_rss_bench_rejects_an_unknown_path(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        rss_main(["--events", "100", "--paths", "ours-journal,web3-naive"])
    assert exited.value.code == 2
    assert "--paths" in capsys.readouterr().err
