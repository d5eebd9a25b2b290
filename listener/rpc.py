"""A small JSON-RPC client: raw JSON (no web3 formatters on the hot path), failover, retries.

Transient failures (connection errors, timeouts, 429, 5xx) are retried with exponential
backoff via tenacity, rotating through the configured URLs; the chain id is checked every
time an endpoint is (re)selected so a misconfigured node is never trusted.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

import requests
import structlog
from tenacity import (
    retry,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from listener.errors import BlockhostError, UserError

log = structlog.get_logger(__name__)


class RpcError(BlockhostError):
    """A JSON-RPC error response (the node answered, the request was refused)."""

    def __init__(self, method: str, code: int | None, message: str, data: Any = None) -> None:
        super().__init__(f"{method}: RPC error {code}: {message}")
        self.method = method
        self.code = code
        self.rpc_message = message
        self.data = data


class TransientRpcError(BlockhostError):
    """Worth retrying, possibly against another endpoint."""


class WrongChainError(UserError):
    """An endpoint serves another chain than the configured one."""


class RpcClient:
    """Thread-safe JSON-RPC over HTTP with failover across ``urls``."""

    def __init__(
        self,
        urls: list[str],
        *,
        expected_chain_id: int | None = None,
        timeout: float = 20.0,
        attempts: int = 6,
    ) -> None:
        if not urls:
            raise UserError("no RPC endpoint configured: set chain.rpc_urls in the config")
        self._urls = list(urls)
        self._rotation = itertools.cycle(range(len(self._urls)))
        self._index = next(self._rotation)
        self._expected_chain_id = expected_chain_id
        self._timeout = timeout
        self._attempts = attempts
        self._lock = threading.Lock()
        self._local = threading.local()
        self._ids = itertools.count(1)
        self._verified: set[int] = set()

    @property
    def url(self) -> str:
        return self._urls[self._index]

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            self._local.session = session
        return session

    def _failover(self) -> None:
        with self._lock:
            if len(self._urls) > 1:
                self._index = next(self._rotation)
                self._verified.discard(self._index)
                log.warning("rpc.failover", endpoint=_redact(self.url))

    def _post(self, payload: Any) -> Any:
        try:
            response = self._session().post(self.url, json=payload, timeout=self._timeout)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TransientRpcError(f"{_redact(self.url)}: {type(exc).__name__}") from None
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientRpcError(f"{_redact(self.url)}: HTTP {response.status_code}")
        if response.status_code != 200:
            raise RpcError(str(payload.get("method", "batch")) if isinstance(payload, dict)
                           else "batch", response.status_code, f"HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError:
            raise TransientRpcError(f"{_redact(self.url)}: response is not JSON") from None

    def _ensure_chain(self) -> None:
        if self._expected_chain_id is None or self._index in self._verified:
            return
        body = self._post({"jsonrpc": "2.0", "id": next(self._ids), "method": "eth_chainId",
                           "params": []})
        got = int(body["result"], 16)
        if got != self._expected_chain_id:
            raise WrongChainError(
                f"RPC endpoint {_redact(self.url)} serves chain id {got}, expected "
                f"{self._expected_chain_id}; fix chain.rpc_urls or chain.chain_id"
            )
        self._verified.add(self._index)

    def call(self, method: str, *params: Any) -> Any:
        """One JSON-RPC call with retries and failover; raises RpcError on an error reply."""

        @retry(
            retry=retry_if_exception_type(TransientRpcError),
            wait=wait_exponential_jitter(initial=0.1, max=5),
            stop=stop_after_attempt(self._attempts),
            reraise=True,
            before_sleep=lambda _state: self._failover(),
        )
        def attempt() -> Any:
            self._ensure_chain()
            body = self._post({"jsonrpc": "2.0", "id": next(self._ids), "method": method,
                               "params": list(params)})
            if "error" in body and body["error"] is not None:
                err = body["error"]
                code = err.get("code")
                message = str(err.get("message", ""))
                if code == -32005 and "rate" in message.lower():
                    raise TransientRpcError(f"{method}: {message}")
                raise RpcError(method, code, message, err.get("data"))
            return body.get("result")

        return attempt()

    # -- typed helpers -------------------------------------------------------------------

    def chain_id(self) -> int:
        return int(self.call("eth_chainId"), 16)

    def block_number(self) -> int:
        return int(self.call("eth_blockNumber"), 16)

    def get_block(self, number: int | str) -> dict[str, Any]:
        tag = hex(number) if isinstance(number, int) else number
        block = self.call("eth_getBlockByNumber", tag, False)
        if block is None:
            raise TransientRpcError(f"block {tag} not available yet on {_redact(self.url)}")
        return block

    def get_logs(self, address: str, from_block: int, to_block: int) -> list[dict[str, Any]]:
        return self.call("eth_getLogs", {"address": address, "fromBlock": hex(from_block),
                                         "toBlock": hex(to_block)})


def _redact(url: str) -> str:
    """Hide API keys that providers embed in URL paths or query strings."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}"
