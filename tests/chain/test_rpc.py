"""RpcClient: error classification, retries, failover, chain-id checks, head monotonicity.

Everything below the classification table runs against a real anvil behind the loopback
fault-injecting proxy (listener/devkit/fault_proxy.py); nothing stands in for the client.
"""

from __future__ import annotations

import pytest

from listener.chain.ranges import LogRangeError, RangeController
from listener.chain.rpc import (
    NodeBehindError,
    RangeTooLargeError,
    RpcClient,
    RpcError,
    TransientRpcError,
    WrongChainError,
    classify_rpc_error,
)
from listener.devkit.devchain import Anvil
from listener.devkit.fault_proxy import ALL_FAULTS, RpcProxy
from listener.devkit.log_emitter import EMITTER_ADDRESS, EMITTER_TOPIC

CHAIN_ID = 31337
#: emitter logs per block on the ``chain`` fixture (conftest.py)
PER_BLOCK = [0, 2, 0, 1, 6, 0, 0, 3, 1, 0, 5, 2, 0, 0, 0, 4]

# -- classification (pure) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "code", "message", "http", "expected"),
    [
        ("eth_getLogs", -32005, "query returned more than 10000 results", None, RangeTooLargeError),
        ("eth_getLogs", -32602, "eth_getLogs is limited to a 10,000 range", None,
         RangeTooLargeError),
        ("eth_getLogs", 413, "Payload Too Large", 413, RangeTooLargeError),
        ("eth_getLogs", -32005, "daily request count exceeded, request rate limited", None,
         TransientRpcError),
        ("eth_getLogs", -32000, "block range extends beyond current head block", None,
         TransientRpcError),
        ("eth_call", -32005, "limit exceeded", None, TransientRpcError),
        ("eth_blockNumber", 429, "Too Many Requests", 429, TransientRpcError),
        ("eth_blockNumber", 503, "Service Unavailable", 503, TransientRpcError),
        ("eth_getBlockByNumber", -32000, "header not found", None, TransientRpcError),
        ("eth_call", -32000, "execution reverted", None, RpcError),
        ("eth_getLogs", -32602, "invalid argument 0: hex string without 0x prefix", None,
         RpcError),
        ("eth_sendRawTransaction", -32000, "nonce too low", None, RpcError),
        # A range-shaped text outside getLogs is not a range error.
        ("eth_call", -32602, "block range too large", None, RpcError),
    ],
)
def test_classification(method: str, code: int, message: str, http: int | None,
                        expected: type) -> None:
    error = classify_rpc_error(method, code, message, http_status=http)
    assert type(error) is expected


def test_range_error_carries_the_parsed_suggestion() -> None:
    error = classify_rpc_error(
        "eth_getLogs", -32005, "query returned more than 10000 results. Try with this block "
        "range [0x10, 0x20].")
    assert isinstance(error, RangeTooLargeError)
    assert (error.hint.suggested_from, error.hint.suggested_to) == (16, 32)


# -- against anvil ----------------------------------------------------------------------------


def client(*urls: str, timeout: float = 0.5, attempts: int = 8) -> RpcClient:
    return RpcClient(list(urls), expected_chain_id=CHAIN_ID, timeout=timeout, attempts=attempts,
                     backoff_initial=0.002, backoff_max=0.02)


def expected_logs(url: str) -> list[tuple[int, int, str]]:
    rpc = RpcClient([url])
    logs = rpc.call("eth_getLogs", {"fromBlock": "0x0", "toBlock": "latest",
                                    "address": EMITTER_ADDRESS})
    return [key(entry) for entry in logs]


def key(entry: dict) -> tuple[int, int, str]:
    return int(entry["blockNumber"], 16), int(entry["logIndex"], 16), entry["topics"][1]


@pytest.mark.parametrize("fault", ALL_FAULTS)
def test_every_fault_shape_is_survived(chain: Anvil, fault: str) -> None:
    """One scheduled fault of each kind, then the same call succeeds with the right answer."""
    head = int(RpcClient([chain.url]).call("eth_blockNumber"), 16)
    with RpcProxy(chain.url, schedule=[fault], timeout_sleep=1.0) as proxy:
        rpc = client(proxy.url)
        batch = rpc.fetch_logs(0, head, address=EMITTER_ADDRESS, topics=[EMITTER_TOPIC],
                               controller=RangeController(1000))
        logs, last = batch.logs, batch.to_block
        if last == head:
            assert [key(e) for e in logs] == expected_logs(chain.url)
        else:  # a range refusal: the first half was served, the cursor moves to exactly it
            assert fault in ("alchemy_size", "infura_results", "infura_results_data",
                             "infura_results_text", "reth_results")
            assert [key(e) for e in logs] == [k for k in expected_logs(chain.url)
                                              if k[0] <= last]
        assert proxy.faults[fault] == 1


def test_wrong_chain_single_endpoint_is_refused(chain: Anvil) -> None:
    with (RpcProxy(chain.url, chain_id=1) as wrong,
          pytest.raises(WrongChainError, match="serves chain id 1, expected 31337")):
        client(wrong.url).block_number()


def test_wrong_chain_endpoint_is_skipped_for_a_good_one(chain: Anvil) -> None:
    with RpcProxy(chain.url, chain_id=5) as wrong, RpcProxy(chain.url) as good:
        rpc = client(wrong.url, good.url)
        for _ in range(5):
            assert rpc.block_number() >= len(PER_BLOCK)
        assert good.methods["eth_blockNumber"] == 5
        assert wrong.methods["eth_blockNumber"] == 0
        assert rpc.url == good.url
        assert sum(rpc.error_counts.values()) == 1


def test_chain_id_is_rechecked_after_a_dropped_connection(chain: Anvil) -> None:
    with RpcProxy(chain.url, schedule=[None, None, "drop"]) as proxy:
        rpc = client(proxy.url)
        rpc.block_number()  # chainId + blockNumber
        rpc.block_number()  # dropped, then chainId again + blockNumber
        assert proxy.methods["eth_chainId"] == 2


def test_lagging_node_never_rewinds_the_head(chain: Anvil) -> None:
    with RpcProxy(chain.url) as good, RpcProxy(chain.url, lag_blocks=5) as lagging:
        rpc = client(good.url, lagging.url)
        head = rpc.block_number()
        good.settings.schedule = ["http_503"]
        assert rpc.block_number() == head  # served by the lagging node, reported unchanged
        assert rpc.url == lagging.url
        assert lagging.methods["eth_blockNumber"] == 1


@pytest.mark.parametrize("mode", ["truncate", "error"])
def test_lagging_node_is_not_trusted_for_blocks_it_lacks(chain: Anvil, mode: str) -> None:
    """Asked beyond its head, the lagging node's (short) answer is refused: fail over."""
    head = int(RpcClient([chain.url]).call("eth_blockNumber"), 16)
    with (RpcProxy(chain.url, lag_blocks=4, lag_mode=mode) as lagging,
          RpcProxy(chain.url) as good):
        rpc = client(lagging.url, good.url)
        batch = rpc.fetch_logs(0, head, address=EMITTER_ADDRESS,
                               controller=RangeController(1000))
        logs, last = batch.logs, batch.to_block
        assert last == head
        assert [key(e) for e in logs] == expected_logs(chain.url)
        assert lagging.methods["eth_getLogs"] == 1
        assert good.methods["eth_getLogs"] == 1


def test_lagging_only_node_gives_a_transient_error(chain: Anvil) -> None:
    head = int(RpcClient([chain.url]).call("eth_blockNumber"), 16)
    with RpcProxy(chain.url, lag_blocks=3) as lagging:
        rpc = client(lagging.url, attempts=3)
        with pytest.raises(NodeBehindError):
            rpc.get_logs(EMITTER_ADDRESS, 0, head)
        with pytest.raises(NodeBehindError):
            rpc.get_block(head)
        assert rpc.get_block(head - 3)["number"] == hex(head - 3)


def test_head_and_cursor_block_come_in_one_request(chain: Anvil) -> None:
    head = int(RpcClient([chain.url]).call("eth_blockNumber"), 16)
    with RpcProxy(chain.url) as proxy:
        rpc = client(proxy.url)
        rpc.chain_id()
        before = proxy.requests
        got_head, header = rpc.head_and_block(head - 2)
        assert proxy.requests == before + 1
        assert got_head == head and header is not None and header["number"] == hex(head - 2)


def test_a_cursor_ahead_of_every_node_is_not_an_error(chain: Anvil) -> None:
    """A single node behind the cursor (lagging, or a shorter fork): no header, no retries;
    the scanner then waits."""
    head = int(RpcClient([chain.url]).call("eth_blockNumber"), 16)
    with RpcProxy(chain.url) as node:
        rpc = client(node.url, attempts=3)
        assert rpc.block_number() == head
        node.settings.lag_blocks = 3  # the only node now reports a lower head
        assert rpc.head_and_block(head - 1) == (head - 3, None)
        assert node.methods["eth_blockNumber"] == 2


def test_a_node_lacking_a_block_another_node_has_is_failed_over(chain: Anvil) -> None:
    head = int(RpcClient([chain.url]).call("eth_blockNumber"), 16)
    with RpcProxy(chain.url) as good, RpcProxy(chain.url, lag_blocks=4) as lagging:
        rpc = client(good.url, lagging.url, good.url)
        assert rpc.block_number() == head  # the good node set the highest head seen
        good.settings.schedule = ["http_503"]  # one failure moves us to the lagging node
        got_head, header = rpc.head_and_block(head - 1)
        assert got_head == head and header is not None and header["number"] == hex(head - 1)
        assert lagging.methods["eth_getBlockByNumber"] == 1  # asked, refused as behind
        assert rpc.url == good.url


def test_transient_errors_give_up_after_the_attempts(chain: Anvil) -> None:
    with RpcProxy(chain.url, fault_rate=1.0, fault_kinds=("http_429",)) as proxy:
        with pytest.raises(TransientRpcError, match="HTTP 429"):
            client(proxy.url, attempts=3).block_number()
        assert proxy.requests == 3


def test_fatal_error_is_not_retried(chain: Anvil) -> None:
    with RpcProxy(chain.url) as proxy:
        rpc = client(proxy.url)
        with pytest.raises(RpcError) as info:
            rpc.call("eth_getBlockByNumber", "not-a-block", False)
        assert not isinstance(info.value, TransientRpcError)
        assert proxy.methods["eth_getBlockByNumber"] == 1


def test_block_span_limit_is_learned(chain: Anvil) -> None:
    head = int(RpcClient([chain.url]).call("eth_blockNumber"), 16)
    with RpcProxy(chain.url, seed=3, max_range=4) as proxy:
        rpc = client(proxy.url)
        controller = RangeController(64, grow_after=1)
        got, cursor = [], -1
        while cursor < head:
            batch = rpc.fetch_logs(cursor + 1, head, address=EMITTER_ADDRESS,
                                   controller=controller)
            cursor = batch.to_block
            got += [key(e) for e in batch.logs]
        assert got == expected_logs(chain.url)
        assert controller.ceiling <= 4
        assert sum(v for k, v in proxy.faults.items() if k.startswith("max_range:")) >= 1


def test_single_block_over_the_result_cap_gives_up_naming_it(chain: Anvil) -> None:
    cap = 4
    first_dense = next(i for i, n in enumerate(PER_BLOCK) if n > cap) + 1  # block 0 is genesis
    head = int(RpcClient([chain.url]).call("eth_blockNumber"), 16)
    with RpcProxy(chain.url, seed=1, max_results=cap) as proxy:
        rpc = client(proxy.url)
        controller = RangeController(64)
        got, cursor = [], -1
        with pytest.raises(LogRangeError, match=f"single block {first_dense} "):
            while cursor < head:
                batch = rpc.fetch_logs(cursor + 1, head, address=EMITTER_ADDRESS,
                                       controller=controller)
                cursor = batch.to_block
                got += [key(e) for e in batch.logs]
        assert cursor == first_dense - 1
        assert got == [k for k in expected_logs(chain.url) if k[0] < first_dense]
        assert sum(proxy.faults.values()) >= 2


def test_provider_without_batches_is_served_call_by_call(chain: Anvil) -> None:
    head = int(RpcClient([chain.url]).call("eth_blockNumber"), 16)
    with RpcProxy(chain.url, no_batch=True) as proxy:
        rpc = client(proxy.url)
        batch = rpc.fetch_logs(0, head, address=EMITTER_ADDRESS,
                               controller=RangeController(1000))
        logs, last = batch.logs, batch.to_block
        assert last == head
        assert [key(e) for e in logs] == expected_logs(chain.url)
        assert proxy.faults["no_batch"] == 1
        assert proxy.methods["eth_getLogs"] == 1


def test_threads_share_one_client_through_faults_and_failover(chain: Anvil) -> None:
    from concurrent.futures import ThreadPoolExecutor

    head = int(RpcClient([chain.url]).call("eth_blockNumber"), 16)
    with (RpcProxy(chain.url, chain_id=7) as wrong,
          RpcProxy(chain.url, seed=5, fault_rate=0.3,
                   fault_kinds=("http_429", "http_503", "drop", "rate_limit")) as flaky_a,
          RpcProxy(chain.url, seed=6, fault_rate=0.3,
                   fault_kinds=("http_503", "truncate", "header_not_found")) as flaky_b):
        rpc = client(wrong.url, flaky_a.url, flaky_b.url, attempts=12)

        def work(_: int) -> list[int]:
            return [rpc.block_number() for _ in range(15)]

        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(work, range(4)))
        assert all(r == [head] * 15 for r in results)
        assert wrong.methods["eth_blockNumber"] == 0
        assert sum(flaky_a.faults.values()) + sum(flaky_b.faults.values()) >= 5


# -- the transport: one connection, whole bodies ---------------------------------------------


class _BigReplyServer:
    """A loopback JSON-RPC endpoint whose eth_getLogs reply is ~4 MB; counts TCP connections
    and can cut a reply short after its headers."""

    def __init__(self, logs: int = 4000, truncate: bool = False) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        entry = {"address": EMITTER_ADDRESS, "topics": [EMITTER_TOPIC], "data": "0x" + "ab" * 400,
                 "blockNumber": "0x1", "blockHash": "0x" + "11" * 32, "logIndex": "0x0",
                 "transactionHash": "0x" + "22" * 32}
        owner = self
        self.connections = 0

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def setup(self) -> None:
                owner.connections += 1
                super().setup()

            def log_message(self, *_args: object) -> None:
                pass

            def do_POST(self) -> None:
                calls = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                replies = []
                for call in calls if isinstance(calls, list) else [calls]:
                    result: object = "0x7a69"
                    if call["method"] == "eth_getLogs":
                        result = [dict(entry, logIndex=hex(i)) for i in range(logs)]
                    elif call["method"] == "eth_getBlockByNumber":
                        result = {"number": "0x1", "hash": "0x" + "11" * 32, "timestamp": "0x1"}
                    replies.append({"jsonrpc": "2.0", "id": call["id"], "result": result})
                body = json.dumps(replies if isinstance(calls, list) else replies[0]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if truncate:
                    self.wfile.write(body[: len(body) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_large_replies_are_read_whole_over_one_kept_alive_connection() -> None:
    server = _BigReplyServer()
    try:
        rpc = RpcClient([server.url], expected_chain_id=CHAIN_ID)
        for _ in range(5):
            batch = rpc.fetch_logs_once(1, 1, address=EMITTER_ADDRESS)
            assert len(batch.logs) == 4000
            assert batch.logs[-1]["logIndex"] == hex(3999)
        assert server.connections == 1
    finally:
        server.close()


def test_a_reply_cut_short_is_transient_and_the_connection_is_not_reused() -> None:
    server = _BigReplyServer(truncate=True)
    try:
        rpc = RpcClient([server.url], attempts=2, backoff_initial=0.001, backoff_max=0.002)
        with pytest.raises(TransientRpcError):
            rpc.fetch_logs_once(1, 1, address=EMITTER_ADDRESS)
        assert server.connections == 2  # each attempt on a fresh connection
    finally:
        server.close()
