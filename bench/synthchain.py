"""A synthetic JSON-RPC node serving N empty blocks, for the sparse-scan benchmark.

anvil mines ~115 blocks/s here, so a million-block chain would take hours to build. This
node computes every block on demand instead: block ``n`` has hash ``sha256("synthchain" ||
n)``, ``parentHash`` = the hash of ``n - 1`` and timestamp ``GENESIS_TIME + 12 n``; no block
holds a transaction or a log. ``eth_getLogs`` answers ``[]`` but refuses, like a hosted
provider, any range wider than ``max_range`` blocks. What it lets us measure is the
listener's own per-range overhead and how fast its range controller learns the provider's
cap, not a real node's speed.

Run as its own process so that serving does not share the measured process's interpreter::

    python -m bench.synthchain --blocks 1000000 --max-range 10000 --port-file PORT

It listens on 127.0.0.1 (an OS-chosen port, written to ``--port-file`` once it accepts
connections) and counts what it served: ``GET /stats`` returns the counters as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

GENESIS_TIME = 1_700_000_000
BLOCK_TIME = 12
DEFAULT_CHAIN_ID = 31_337
#: Error texts of hosted providers (parsed by ``listener.chain.ranges``): one that states the
#: span limit, one that does not (the client must find the limit by halving).
ERROR_STYLES = {
    "stated": (-32614, "eth_getLogs is limited to a {cap:,} range"),
    "bare": (-32602, "block range is too wide"),
}
_ZERO_HASH = "0x" + "00" * 32
_ZERO_BLOOM = "0x" + "00" * 256
_EMPTY_ROOT = "0x56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421"
_EMPTY_UNCLES = "0x1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347"


class RpcFailure(Exception):
    """A JSON-RPC error reply."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class SynthChain:
    """The chain's content and the request counters (thread-safe)."""

    def __init__(self, blocks: int, *, max_range: int, chain_id: int = DEFAULT_CHAIN_ID,
                 error_style: str = "stated") -> None:
        if blocks < 1 or max_range < 1:
            raise ValueError("blocks and max_range must be positive")
        self.head = blocks
        self.max_range = max_range
        self.chain_id = chain_id
        self.error_code, template = ERROR_STYLES[error_style]
        self.error_message = template.format(cap=max_range)
        self._lock = threading.Lock()
        self.http_requests = 0
        self.calls: Counter[str] = Counter()
        self.refused = 0

    # -- content ---------------------------------------------------------------------------

    @staticmethod
    def block_hash(number: int) -> str:
        return "0x" + hashlib.sha256(b"synthchain" + number.to_bytes(32, "big")).hexdigest()

    def block(self, number: int) -> dict[str, Any]:
        """The header of block ``number`` (full-shaped so web3 formatters accept it)."""
        return {
            "number": hex(number),
            "hash": self.block_hash(number),
            "parentHash": self.block_hash(number - 1) if number > 0 else _ZERO_HASH,
            "timestamp": hex(GENESIS_TIME + BLOCK_TIME * number),
            "nonce": "0x0000000000000000",
            "sha3Uncles": _EMPTY_UNCLES,
            "logsBloom": _ZERO_BLOOM,
            "transactionsRoot": _EMPTY_ROOT,
            "stateRoot": _EMPTY_ROOT,
            "receiptsRoot": _EMPTY_ROOT,
            "miner": "0x" + "00" * 20,
            "difficulty": "0x0",
            "totalDifficulty": "0x0",
            "extraData": "0x",
            "size": "0x200",
            "gasLimit": hex(30_000_000),
            "gasUsed": "0x0",
            "baseFeePerGas": hex(1_000_000_000),
            "mixHash": _ZERO_HASH,
            "transactions": [],
            "uncles": [],
        }

    def _number(self, tag: Any, default: str = "latest") -> int:
        tag = default if tag is None else tag
        if isinstance(tag, int):
            return tag
        if tag in ("latest", "finalized", "safe", "pending"):
            return self.head
        if tag == "earliest":
            return 0
        if isinstance(tag, str) and tag.startswith("0x"):
            try:
                return int(tag, 16)
            except ValueError:
                pass
        raise RpcFailure(-32602, f"invalid block tag {str(tag)[:40]!r}")

    # -- methods ---------------------------------------------------------------------------

    def dispatch(self, method: str, params: list[Any]) -> Any:
        with self._lock:
            self.calls[method] += 1
        if method == "eth_chainId":
            return hex(self.chain_id)
        if method == "net_version":
            return str(self.chain_id)
        if method == "eth_blockNumber":
            return hex(self.head)
        if method == "eth_getBlockByNumber":
            number = self._number(params[0] if params else None)
            return self.block(number) if 0 <= number <= self.head else None
        if method == "eth_getLogs":
            return self._get_logs(params[0] if params else {})
        raise RpcFailure(-32601, f"the method {method} does not exist/is not available")

    def _get_logs(self, query: Any) -> list[Any]:
        if not isinstance(query, dict):
            raise RpcFailure(-32602, "invalid argument 0: expected a filter object")
        if "blockHash" in query:
            return []
        first = self._number(query.get("fromBlock"))
        last = self._number(query.get("toBlock"))
        if first > last:
            raise RpcFailure(-32602, "invalid block range params")
        if last > self.head:
            raise RpcFailure(-32602, "block range extends beyond current head block")
        if last - first + 1 > self.max_range:
            with self._lock:
                self.refused += 1
            raise RpcFailure(self.error_code, self.error_message)
        return []

    def handle(self, message: Any) -> Any:
        """One JSON-RPC request object (or a batch of them) to its reply."""
        if isinstance(message, list):
            if not message:
                return _error(None, -32600, "empty batch")
            return [self.handle(item) for item in message]
        if not isinstance(message, dict) or not isinstance(message.get("method"), str):
            return _error(None, -32600, "invalid request")
        request_id = message.get("id")
        params = message.get("params") or []
        try:
            result = self.dispatch(message["method"], list(params))
        except RpcFailure as failure:
            return _error(request_id, failure.code, failure.message)
        return {"jsonrpc": "2.0", "id": request_id, "result": result}

    def count_http_request(self) -> None:
        with self._lock:
            self.http_requests += 1

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"http_requests": self.http_requests, "calls": dict(self.calls),
                    "refused": self.refused, "head": self.head, "max_range": self.max_range}


def _error(request_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def make_server(chain: SynthChain, port: int = 0, *, latency: float = 0.0) -> ThreadingHTTPServer:
    """An HTTP/1.1 (keep-alive) server on loopback answering JSON-RPC POSTs for ``chain``.

    ``latency`` (seconds) is added before every POST's reply, to stand in for a hosted
    provider's round trip: then the number of requests, not loopback speed, decides."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes: without TCP_NODELAY, Nagle's algorithm and
        # the client's delayed ACK add ~40 ms to every reply on a kept-alive connection.
        disable_nagle_algorithm = True

        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body, separators=(",", ":")).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/stats":
                self._send(200, chain.stats())
            else:
                self._send(404, {"error": "only GET /stats and JSON-RPC POSTs are served"})

        def do_POST(self) -> None:
            chain.count_http_request()
            if latency > 0:
                time.sleep(latency)
            length = int(self.headers.get("Content-Length") or 0)
            try:
                message = json.loads(self.rfile.read(length))
            except ValueError:
                self._send(200, _error(None, -32700, "parse error"))
                return
            self._send(200, chain.handle(message))

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
            return

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    return server


def _write_port(path: Path, port: int) -> None:
    """Atomically, so a reader never sees a half-written number."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(str(port))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.synthchain",
        description="Serve a synthetic chain of N empty blocks over JSON-RPC on 127.0.0.1.")
    parser.add_argument("--blocks", type=int, default=1_000_000, help="head block number")
    parser.add_argument("--max-range", type=int, default=10_000,
                        help="widest eth_getLogs range served, in blocks (default 10000)")
    parser.add_argument("--error-style", choices=sorted(ERROR_STYLES), default="stated",
                        help="refusal text: 'stated' names the limit, 'bare' does not")
    parser.add_argument("--chain-id", type=int, default=DEFAULT_CHAIN_ID)
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="delay added to every reply, in ms (a provider's round trip)")
    parser.add_argument("--port", type=int, default=0, help="0 = let the OS choose")
    parser.add_argument("--port-file", type=Path, required=True,
                        help="file the listening port is written to")
    args = parser.parse_args(argv)
    if args.blocks < 1 or args.max_range < 1 or args.latency_ms < 0:
        parser.error("--blocks and --max-range must be at least 1, --latency-ms at least 0")
    chain = SynthChain(args.blocks, max_range=args.max_range, chain_id=args.chain_id,
                       error_style=args.error_style)
    server = make_server(chain, args.port, latency=args.latency_ms / 1000)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    _write_port(args.port_file, server.server_address[1])
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
