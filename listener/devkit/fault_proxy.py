"""A fault-injecting JSON-RPC proxy on loopback, for tests and local drills (not production).

It forwards to a real node (anvil) and, on demand, answers like real providers misbehave:
range and result-size refusals in their own error shapes (with and without a suggested
range), 429, 503, -32005 rate limits, "header not found", requests that hang past the client's
timeout, dropped or truncated connections, a node lagging N blocks, a node on another chain,
and a load balancer whose slow backend answers receipts, logs and calls from an older head
while the nonce and head come from the live node (``stale_reads`` seconds).

Faults come from an explicit ``schedule`` (consumed one per HTTP request, ``None`` = pass) and
then at random with ``fault_rate`` from a seeded RNG, so a failing run can be replayed.
``max_range`` / ``max_results`` are deterministic provider limits, applied on every request.

Run by hand: ``python -m listener.devkit.fault_proxy --upstream http://127.0.0.1:8545 --fault-rate 0.2``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

#: Faults that break the whole HTTP exchange.
HTTP_FAULTS = ("http_429", "http_503", "timeout", "drop", "truncate")
#: Faults answered as JSON-RPC errors by every call of the request.
RPC_FAULTS = ("rate_limit", "header_not_found")
#: Result-size refusals of an ``eth_getLogs`` spanning more than one block (random ones claim
#: the range was too dense; their suggestions are half the request).
RANGE_FAULTS = ("alchemy_size", "infura_results", "infura_results_data",
                "infura_results_text", "reth_results")
ALL_FAULTS = HTTP_FAULTS + RPC_FAULTS + RANGE_FAULTS
#: Shapes used when ``max_range`` is exceeded (QuickNode, Infura -32602, geth-like, Ankr).
SPAN_SHAPES = ("quicknode", "infura_32602", "exceed_max", "too_wide", "plain_too_large")
#: Calls a load balancer's lagging backend answers from its older view (``stale_reads``).
STALE_METHODS = ("eth_getTransactionReceipt", "eth_getTransactionByHash", "eth_getLogs",
                 "eth_call")


@dataclass
class ProxySettings:
    """What the proxy does; may be changed while it runs (read under the proxy's lock)."""

    fault_rate: float = 0.0
    fault_kinds: tuple[str, ...] = ALL_FAULTS
    schedule: list[str | None] = field(default_factory=list)
    lag_blocks: int = 0
    lag_mode: str = "truncate"  # or "error": refuse getLogs above the lagged head
    chain_id: int | None = None
    max_range: int | None = None
    max_results: int | None = None
    timeout_sleep: float = 2.0
    no_batch: bool = False  # refuse JSON-RPC batches like some providers do
    stale_reads: float = 0.0  # seconds a new block stays hidden from STALE_METHODS


class RpcProxy:
    """A ThreadingHTTPServer on 127.0.0.1 (OS-chosen port) in front of ``upstream``."""

    def __init__(self, upstream: str, *, seed: int = 0, settings: ProxySettings | None = None,
                 **overrides: Any) -> None:
        self.upstream = upstream
        self.settings = settings or ProxySettings()
        for key, value in overrides.items():
            setattr(self.settings, key, value)
        for kind in self.settings.fault_kinds:
            if kind not in ALL_FAULTS:
                raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(ALL_FAULTS)}")
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._local = threading.local()
        #: Counters for assertions: requests, calls by method, injected faults by kind.
        self.requests = 0
        self.methods: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self._seen: list[tuple[int, float]] = []  # (head, when first seen) for stale_reads
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name="rpcproxy", daemon=True)

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> RpcProxy:
        if self.settings.stale_reads:
            self._stale_head()  # blocks that exist now are visible everywhere
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> RpcProxy:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- decisions -----------------------------------------------------------------------

    def _choose_fault(self, calls: list[dict[str, Any]]) -> str | None:
        with self._lock:
            self.requests += 1
            for call in calls:
                self.methods[str(call.get("method"))] += 1
            s = self.settings
            has_range = any(_log_span(c) > 1 for c in calls)
            if s.schedule:
                # A scheduled range refusal waits for the first multi-block getLogs.
                kind = None if s.schedule[0] in RANGE_FAULTS and not has_range \
                    else s.schedule.pop(0)
            elif s.fault_rate > 0 and self._rng.random() < s.fault_rate:
                kind = self._rng.choice(s.fault_kinds)
            else:
                kind = None
            if kind in RANGE_FAULTS and not has_range:
                kind = None  # a range refusal only makes sense for a multi-block getLogs
            if kind is not None:
                self.faults[kind] += 1
            return kind

    def _pick(self, options: Iterable[str]) -> str:
        with self._lock:
            return self._rng.choice(list(options))

    # -- forwarding ----------------------------------------------------------------------

    def _upstream(self, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        response = session.post(self.upstream, json=calls, timeout=30)
        body = response.json()
        return body if isinstance(body, list) else [body]

    def _real_head(self) -> int:
        reply = self._upstream([{"jsonrpc": "2.0", "id": 0, "method": "eth_blockNumber",
                                 "params": []}])[0]
        return int(reply["result"], 16)

    def _stale_head(self) -> int:
        """The newest block the lagging backend knows: first seen ``stale_reads`` s ago."""
        head, now = self._real_head(), time.monotonic()
        with self._lock:
            if not self._seen or head > self._seen[-1][0]:
                self._seen.append((head, now if self._seen else float("-inf")))
            known = [n for n, seen in self._seen if seen <= now - self.settings.stale_reads]
            return min(head, max(known, default=0))

    def _stale_answer(self, call: dict[str, Any], stale: int) -> Any:
        params = list(call.get("params") or [])
        if call["method"] == "eth_getLogs":
            return self._get_logs(call.get("id"), dict(params[0]), None, stale)
        if call["method"] == "eth_call":
            tag = params[1] if len(params) > 1 else "latest"
            if not (isinstance(tag, str) and tag.startswith("0x") and int(tag, 16) <= stale):
                params[1:] = [hex(stale)]
            return self._upstream([{**call, "params": params}])[0]
        reply = self._upstream([call])[0]
        found = reply.get("result")
        if isinstance(found, dict) and int(found.get("blockNumber") or "0x0", 16) > stale:
            with self._lock:
                self.faults["stale:" + str(call["method"])] += 1
            return {**reply, "result": None}
        return reply

    def handle(self, payload: Any) -> Any:
        """Answer one JSON-RPC request or batch (raises _HttpFault for HTTP-level faults)."""
        calls = payload if isinstance(payload, list) else [payload]
        if isinstance(payload, list) and self.settings.no_batch:
            with self._lock:
                self.faults["no_batch"] += 1
            return _error(None, -32600, "batch requests are not supported")
        fault = self._choose_fault(calls)
        if fault in HTTP_FAULTS:
            raise _HttpFault(fault)
        replies: list[dict[str, Any]] = []
        s = self.settings
        head = self._real_head() - s.lag_blocks if s.lag_blocks else None
        stale = self._stale_head() if s.stale_reads else None
        for call in calls:
            if stale is not None and fault is None and call.get("method") in STALE_METHODS:
                replies.append(self._stale_answer(call, stale))
            else:
                replies.append(self._answer(call, fault, head))
        return replies if isinstance(payload, list) else replies[0]

    def _answer(self, call: dict[str, Any], fault: str | None, lagged: int | None) -> Any:
        cid = call.get("id")
        method = call.get("method")
        params = list(call.get("params") or [])
        s = self.settings
        if fault == "rate_limit":
            return _error(cid, -32005, "daily request count exceeded, request rate limited")
        if fault == "header_not_found":
            return _error(cid, -32000, "header not found")
        if method == "eth_chainId" and s.chain_id is not None:
            return {"jsonrpc": "2.0", "id": cid, "result": hex(s.chain_id)}
        if method == "net_version" and s.chain_id is not None:
            return {"jsonrpc": "2.0", "id": cid, "result": str(s.chain_id)}
        if method == "eth_getLogs" and params and isinstance(params[0], dict):
            return self._get_logs(cid, dict(params[0]), fault, lagged)
        if lagged is not None and method == "eth_blockNumber":
            return {"jsonrpc": "2.0", "id": cid, "result": hex(max(0, lagged))}
        if lagged is not None and method == "eth_getBlockByNumber" and params:
            tag = params[0]
            if tag in ("latest", "pending"):
                params[0] = hex(max(0, lagged))
            elif isinstance(tag, str) and tag.startswith("0x") and int(tag, 16) > lagged:
                return {"jsonrpc": "2.0", "id": cid, "result": None}
            call = {**call, "params": params}
        return self._upstream([call])[0]

    def _get_logs(self, cid: Any, flt: dict[str, Any], fault: str | None,
                  lagged: int | None) -> Any:
        s = self.settings
        head = lagged if lagged is not None else None
        start = _block_arg(flt.get("fromBlock", "latest"), head)
        end = _block_arg(flt.get("toBlock", "latest"), head)
        if lagged is not None:
            start = lagged if start is None else start
            end = lagged if end is None else end
            if end > lagged:
                if s.lag_mode == "error":
                    return _error(cid, -32000, "block range extends beyond current head block")
                if start > lagged:
                    return {"jsonrpc": "2.0", "id": cid, "result": []}
                flt["toBlock"] = hex(lagged)
                end = lagged
        if start is not None and end is not None:
            span = end - start + 1
            if fault in RANGE_FAULTS and span > 1:
                return self._size_refusal(cid, fault, start, start + span // 2 - 1)
            if s.max_range is not None and span > s.max_range:
                return self._span_refusal(cid, s.max_range)
        reply = self._upstream([{"jsonrpc": "2.0", "id": cid, "method": "eth_getLogs",
                                 "params": [flt]}])[0]
        logs = reply.get("result")
        if (s.max_results is not None and isinstance(logs, list) and len(logs) > s.max_results
                and start is not None):
            fits = _fitting_end(logs, s.max_results, start)
            kind = self._pick(RANGE_FAULTS)
            with self._lock:
                self.faults["max_results:" + kind] += 1
            return self._size_refusal(cid, kind, start, fits)
        return reply

    def _size_refusal(self, cid: Any, kind: str, start: int, fits: int) -> dict[str, Any]:
        pair = f"[{hex(start)}, {hex(fits)}]"
        if kind == "alchemy_size":
            return _error(cid, -32602, (
                "Log response size exceeded. You can make eth_getLogs requests with up to a 2K "
                "block range and no limit on the response size, or you can request any block "
                "range with a cap of 10K logs in the response. Based on your parameters, this "
                f"block range should work: {pair}"))
        if kind == "infura_results_text":
            return _error(cid, -32005, "query returned more than 10000 results. "
                                       f"Try with this block range {pair}.")
        if kind == "infura_results_data":
            return _error(cid, -32005, "query returned more than 10000 results",
                          {"from": hex(start), "to": hex(fits)})
        if kind == "reth_results":
            return _error(cid, -32602, f"query exceeds max results 10000, retry with the range "
                                       f"{start}-{fits}")
        return _error(cid, -32005, "query returned more than 10000 results")

    def _span_refusal(self, cid: Any, limit: int) -> dict[str, Any]:
        shape = self._pick(SPAN_SHAPES)
        with self._lock:
            self.faults["max_range:" + shape] += 1
        if shape == "quicknode":
            return _error(cid, -32602, f"eth_getLogs is limited to a {limit:,} range")
        if shape == "infura_32602":
            return _error(cid, -32602, f"eth_getLogs range exceeds limit of {limit}")
        if shape == "exceed_max":
            return _error(cid, -32000, f"exceed maximum block range: {limit}")
        if shape == "too_wide":
            return _error(cid, -32602, "block range is too wide")
        return _error(cid, -32602, "block range too large")

    # -- HTTP ------------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: Any) -> None:  # keep test output quiet
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    payload = json.loads(self.rfile.read(length) or b"null")
                except ValueError:
                    self._send(400, _error(None, -32700, "parse error"))
                    return
                try:
                    body = proxy.handle(payload)
                except _HttpFault as fault:
                    self._http_fault(fault.kind)
                    return
                except requests.RequestException as exc:
                    self._send(502, _error(None, -32603, f"upstream: {type(exc).__name__}"))
                    return
                self._send(200, body)

            def _send(self, status: int, body: Any, raw: bytes | None = None) -> None:
                data = raw if raw is not None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _http_fault(self, kind: str) -> None:
                if kind == "http_429":
                    self._send(429, None, b'{"jsonrpc":"2.0","id":null,"error":{"code":429,'
                                          b'"message":"Too Many Requests"}}')
                elif kind == "http_503":
                    self._send(503, None, b"<html><body>503 Service Unavailable</body></html>")
                elif kind == "timeout":
                    proxy._stopping.wait(proxy.settings.timeout_sleep)
                    self.close_connection = True
                elif kind == "truncate":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "4096")
                    self.end_headers()
                    self.wfile.write(b'{"jsonrpc":"2.0","id":1,"result":[{"addr')
                    self.wfile.flush()
                    self._abort()
                else:  # drop
                    self._abort()

            def _abort(self) -> None:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)

        return Handler


class _HttpFault(Exception):
    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def _error(cid: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": cid, "error": error}


def _block_arg(value: Any, head: int | None) -> int | None:
    """A getLogs block argument as a number; tags resolve to ``head`` (None = unknown)."""
    if isinstance(value, str) and value.startswith("0x"):
        return int(value, 16)
    if isinstance(value, int):
        return value
    return head


def _log_span(call: dict[str, Any]) -> int:
    if call.get("method") != "eth_getLogs" or not call.get("params"):
        return 0
    flt = call["params"][0]
    start = _block_arg(flt.get("fromBlock"), None) if isinstance(flt, dict) else None
    end = _block_arg(flt.get("toBlock"), None) if isinstance(flt, dict) else None
    return 0 if start is None or end is None else end - start + 1


def _fitting_end(logs: list[dict[str, Any]], cap: int, start: int) -> int:
    """The last block such that ``start..it`` holds at most ``cap`` logs (at least ``start``)."""
    per_block = Counter(int(entry["blockNumber"], 16) for entry in logs)
    total, end = 0, start
    for number in sorted(per_block):
        if total + per_block[number] > cap:
            return max(start, number - 1)
        total += per_block[number]
        end = number
    return end


def main(argv: list[str] | None = None) -> int:
    """Run a proxy in the foreground until interrupted; prints its URL."""
    parser = argparse.ArgumentParser(prog="python -m listener.devkit.fault_proxy", description=__doc__)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--lag-blocks", type=int, default=0)
    parser.add_argument("--chain-id", type=int, default=None)
    parser.add_argument("--max-range", type=int, default=None)
    parser.add_argument("--max-results", type=int, default=None)
    parser.add_argument("--stale-reads", type=float, default=0.0)
    args = parser.parse_args(argv)
    proxy = RpcProxy(args.upstream, seed=args.seed, fault_rate=args.fault_rate,
                     lag_blocks=args.lag_blocks, chain_id=args.chain_id,
                     max_range=args.max_range, max_results=args.max_results,
                     stale_reads=args.stale_reads)
    proxy.start()
    print(proxy.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        proxy.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
