"""A small JSON-RPC client: raw JSON (no web3 formatters on the hot path), failover, retries.

Every failure is classified once (``classify_rpc_error``): a *range too large* refusal carries
the provider's hint for :mod:`listener.chain.ranges`; *transient* failures (429, 5xx, timeouts,
dropped connections, -32005 rate limits, "header not found", a node behind the block we ask)
are retried with exponential backoff via tenacity, failing over to the next URL; anything else
is fatal. The chain id is re-checked after every failover or connection failure, and an
endpoint on the wrong chain is quarantined (or, if it is the only one, refused). The head we
report never moves back because another node lags.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
import requests
import structlog
import urllib3
from tenacity import (
    retry,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from listener.chain.ranges import RangeController, RangeHint, parse_range_error
from listener.errors import BlockhostError, UserError

log = structlog.get_logger(__name__)

#: How long an endpoint that served the wrong chain id is skipped before it is checked again.
WRONG_CHAIN_QUARANTINE_SECONDS = 60.0

_TRANSIENT_TEXT = re.compile(
    r"rate.?limit|too many requests|request rate|capacity|compute units|quota|"
    r"limit exceeded|header not found|unknown block|block not found|not (?:yet )?available|"
    r"timed? ?out|timeout|temporar|unavailable|try again|overloaded|busy|upstream|backend|"
    r"connection reset|syncing|internal server error|beyond (?:the )?(?:current )?head",
    re.IGNORECASE,
)


class RpcError(BlockhostError):
    """A JSON-RPC error response (the node answered, the request was refused)."""

    def __init__(self, method: str, code: int | None, message: str, data: Any = None) -> None:
        super().__init__(f"{method}: RPC error {code}: {message}")
        self.method = method
        self.code = code
        self.rpc_message = message
        self.data = data


class RangeTooLargeError(RpcError):
    """``eth_getLogs`` refused because the range was too wide or held too many logs."""

    def __init__(self, method: str, code: int | None, message: str, data: Any,
                 hint: RangeHint) -> None:
        super().__init__(method, code, message, data)
        self.hint = hint


class TransientRpcError(BlockhostError):
    """Worth retrying, possibly against another endpoint."""


class NodeBehindError(TransientRpcError):
    """The endpoint has not yet seen a block we asked about; another node may have."""


class WrongChainError(UserError):
    """An endpoint serves another chain than the configured one."""


class _WrongChainEndpoint(TransientRpcError):
    """This endpoint is on the wrong chain but others remain: fail over."""


def classify_rpc_error(method: str, code: int | None, message: str, data: Any = None, *,
                       http_status: int | None = None) -> BlockhostError:
    """Map one error reply to RangeTooLargeError, TransientRpcError or a fatal RpcError."""
    if method == "eth_getLogs":
        hint = parse_range_error(message, data)
        if hint is None and http_status == 413:
            hint = RangeHint("result_size")
        if hint is not None:
            return RangeTooLargeError(method, code, message, data, hint)
    if http_status is not None and (http_status in (408, 429) or http_status >= 500):
        return TransientRpcError(f"{method}: HTTP {http_status}: {message}"[:300])
    if code in (429, -32005, -32090, -32097) or _TRANSIENT_TEXT.search(message or ""):
        return TransientRpcError(f"{method}: RPC error {code}: {message}"[:300])
    return RpcError(method, code, message, data)


@dataclass(frozen=True)
class LogBatch:
    """Logs of ``from_block..to_block`` and the header of ``to_block`` from the same node."""

    logs: list[dict[str, Any]]
    from_block: int
    to_block: int
    to_header: dict[str, Any]


@dataclass
class _Endpoint:
    url: str
    verified: bool = False
    quarantined_until: float = 0.0


class RpcClient:
    """Thread-safe JSON-RPC over HTTP with failover across ``urls``."""

    def __init__(
        self,
        urls: list[str],
        *,
        expected_chain_id: int | None = None,
        timeout: float = 20.0,
        attempts: int = 6,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
    ) -> None:
        if not urls:
            raise UserError("no RPC endpoint configured: set chain.rpc_urls in the config")
        self._endpoints = [_Endpoint(url) for url in urls]
        self._index = 0
        self._expected_chain_id = expected_chain_id
        self._timeout = timeout
        self._attempts = attempts
        self._backoff = (backoff_initial, backoff_max)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._ids = itertools.count(1)
        self._max_head = -1
        self._max_head_source = -1
        #: Failures by endpoint (``"<index>:<redacted url>"``), for metrics and status.
        self.error_counts: Counter[str] = Counter()

    @property
    def url(self) -> str:
        return self._endpoints[self._index].url

    @property
    def endpoint_label(self) -> str:
        return f"{self._index}:{_redact(self.url)}"

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            self._local.session = session
        return session

    # -- endpoint selection ------------------------------------------------------------------

    def _failover(self, reason: str) -> None:
        """Move to the next endpoint that is not quarantined; it is re-verified before use."""
        with self._lock:
            failed = getattr(self._local, "index", self._index)
            self.error_counts[f"{failed}:{_redact(self._endpoints[failed].url)}"] += 1
            if failed != self._index:
                return  # another thread already moved away from the failed endpoint
            count = len(self._endpoints)
            now = time.monotonic()
            for step in range(1, count + 1):
                candidate = (self._index + step) % count
                if self._endpoints[candidate].quarantined_until <= now or step == count:
                    break
            if count > 1:
                log.warning("rpc.failover", endpoint=self.endpoint_label, reason=reason[:200],
                            to=f"{candidate}:{_redact(self._endpoints[candidate].url)}")
            self._index = candidate
            self._endpoints[candidate].verified = False

    def _ensure_chain(self) -> int:
        """Pin the current endpoint for one attempt, checking its chain id if not yet done."""
        index = self._index
        endpoint = self._endpoints[index]
        self._local.index = index
        if self._expected_chain_id is None or endpoint.verified:
            return index
        body = self._post({"jsonrpc": "2.0", "id": next(self._ids), "method": "eth_chainId",
                           "params": []})
        result = body.get("result") if isinstance(body, dict) else None
        if not isinstance(result, str):
            raise TransientRpcError(f"{_redact(endpoint.url)}: eth_chainId gave no result")
        got = int(result, 16)
        if got == self._expected_chain_id:
            endpoint.verified = True
            endpoint.quarantined_until = 0.0
            return index
        now = time.monotonic()
        endpoint.quarantined_until = now + WRONG_CHAIN_QUARANTINE_SECONDS
        message = (f"RPC endpoint {_redact(endpoint.url)} serves chain id {got}, expected "
                   f"{self._expected_chain_id}; fix chain.rpc_urls or chain.chain_id")
        if all(e.quarantined_until > now for e in self._endpoints):
            raise WrongChainError(message)
        log.error("rpc.wrong_chain", endpoint=self.endpoint_label, chain_id=got,
                  expected=self._expected_chain_id)
        raise _WrongChainEndpoint(message)

    # -- transport ---------------------------------------------------------------------------

    def _post(self, payload: Any) -> Any:
        """POST to the endpoint pinned by ``_ensure_chain`` for this thread's attempt."""
        index = getattr(self._local, "index", self._index)
        url = self._endpoints[index].url
        try:
            response = self._session().post(url, json=payload, timeout=self._timeout,
                                            stream=True)
            status = response.status_code
            content = _read_body(response)
        except (requests.ConnectionError, requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError,
                urllib3.exceptions.HTTPError, OSError) as exc:
            # A new connection will be made: re-check the chain id on it.
            self._endpoints[index].verified = False
            raise TransientRpcError(f"{_redact(url)}: {type(exc).__name__}") from None
        method = _method_of(payload)
        text = content[:400].decode("utf-8", errors="replace")  # for error messages only
        try:
            # orjson straight from the bytes: a 10,000-log response is ~9 MB, and requests'
            # .text/.json() would decode it twice and parse it ~3x slower
            body = orjson.loads(content)
        except orjson.JSONDecodeError:
            if status != 200:
                raise classify_rpc_error(method, status, text[:200], http_status=status) from None
            raise TransientRpcError(f"{_redact(url)}: response is not JSON") from None
        if status != 200:
            error = body.get("error") if isinstance(body, dict) else None
            message = str(error.get("message", "")) if isinstance(error, dict) else f"HTTP {status}"
            code = error.get("code") if isinstance(error, dict) else status
            data = error.get("data") if isinstance(error, dict) else None
            raise classify_rpc_error(method, code, message, data, http_status=status)
        return body

    def _retrying(self, attempt: Callable[[], Any]) -> Any:
        initial, maximum = self._backoff
        wrapped = retry(
            retry=retry_if_exception_type(TransientRpcError),
            wait=wait_exponential_jitter(initial=initial, max=maximum),
            stop=stop_after_attempt(self._attempts),
            reraise=True,
            before_sleep=lambda state: self._failover(
                str(state.outcome.exception()) if state.outcome else "retry"),
        )(attempt)
        return wrapped()

    @staticmethod
    def _result(method: str, reply: Any) -> Any:
        if not isinstance(reply, dict):
            raise TransientRpcError(f"{method}: malformed reply")
        error = reply.get("error")
        if error is not None:
            if not isinstance(error, dict):
                raise TransientRpcError(f"{method}: malformed error reply")
            raise classify_rpc_error(method, error.get("code"), str(error.get("message", "")),
                                     error.get("data"))
        if "result" not in reply:
            raise TransientRpcError(f"{method}: reply without result")
        return reply["result"]

    def call(self, method: str, *params: Any) -> Any:
        """One JSON-RPC call with retries and failover; raises RpcError on an error reply."""

        def attempt() -> Any:
            self._ensure_chain()
            body = self._post({"jsonrpc": "2.0", "id": next(self._ids), "method": method,
                               "params": list(params)})
            return self._result(method, body)

        return self._retrying(attempt)

    def batch(self, calls: Sequence[tuple[str, list[Any]]],
              check: Callable[[list[Any]], None] | None = None) -> list[Any]:
        """Several calls in one JSON-RPC batch (one round trip, one backend), retried whole.

        ``check`` may raise TransientRpcError (e.g. NodeBehindError) to fail over and retry.
        """

        def one_by_one() -> list[Any]:
            return [self._result(m, self._post({"jsonrpc": "2.0", "id": next(self._ids),
                                                "method": m, "params": p}))
                    for m, p in calls]

        def batched() -> list[Any]:
            ids = [next(self._ids) for _ in calls]
            try:
                body = self._post([{"jsonrpc": "2.0", "id": i, "method": m, "params": p}
                                   for i, (m, p) in zip(ids, calls, strict=True)])
                if isinstance(body, dict):  # the whole batch was answered with one reply
                    self._result(_method_of([{"method": m} for m, _ in calls]), body)
                    raise TransientRpcError("batch answered with a single reply")
            except (TransientRpcError, RangeTooLargeError):
                raise
            except RpcError as exc:
                # Some providers refuse JSON-RPC batches: send the calls one by one.
                log.warning("rpc.batch_refused", endpoint=self.endpoint_label,
                            error=exc.rpc_message[:200])
                return one_by_one()
            if not isinstance(body, list):
                raise TransientRpcError("batch reply is not a list")
            by_id = {r.get("id"): r for r in body if isinstance(r, dict)}
            return [self._result(m, by_id.get(i)) for i, (m, _) in zip(ids, calls, strict=True)]

        def attempt() -> list[Any]:
            self._ensure_chain()
            results = one_by_one() if len(calls) == 1 else batched()
            if check is not None:
                check(results)
            return results

        results: list[Any] = self._retrying(attempt)
        return results

    # -- typed helpers -------------------------------------------------------------------

    def chain_id(self) -> int:
        return int(self.call("eth_chainId"), 16)

    def block_number(self) -> int:
        """The newest head seen; a lagging node after a failover never moves it back.

        Only the endpoint that reported the current maximum may lower it (a real rewind of
        that node, e.g. a dev chain reverted to a snapshot)."""
        return self._observe_head(int(self.call("eth_blockNumber"), 16))

    def _observe_head(self, number: int) -> int:
        with self._lock:
            if number >= self._max_head or self._index == self._max_head_source:
                self._max_head = number
                self._max_head_source = self._index
            elif number < self._max_head:
                log.info("rpc.node_lagging", endpoint=self.endpoint_label, head=number,
                         max_head=self._max_head)
            return self._max_head

    def head_and_block(self, number: int) -> tuple[int, dict[str, Any] | None]:
        """The head (as :meth:`block_number`) and block ``number``'s header, in one batch from
        one node: a scan step's head and reorg check in one round trip instead of two.

        The header is None only when every node seen so far is below ``number`` (the
        cursor is ahead of the chain: a lagging node or a shorter fork; the caller waits).
        A node that lacks the block while another node's head covers it is lagging: fail
        over, as :meth:`get_block` does."""
        tag = hex(number)
        observed: list[int] = []

        def check(results: list[Any]) -> None:
            head = self._observe_head(int(results[0], 16))
            if results[1] is None and head >= number:
                raise NodeBehindError(f"block {tag} not available yet on {self.endpoint_label}")
            observed.append(head)

        _raw_head, header = self.batch(
            [("eth_blockNumber", []), ("eth_getBlockByNumber", [tag, False])], check)
        return observed[-1], header

    def get_block(self, number: int | str) -> dict[str, Any]:
        """A block header; a node that does not have it yet counts as lagging (fail over)."""
        tag = hex(number) if isinstance(number, int) else number

        def check(results: list[Any]) -> None:
            if results[0] is None:
                raise NodeBehindError(f"block {tag} not available yet on {self.endpoint_label}")

        block: dict[str, Any] = self.batch([("eth_getBlockByNumber", [tag, False])], check)[0]
        return block

    def get_logs(self, address: str, from_block: int, to_block: int) -> list[dict[str, Any]]:
        """Logs of a fixed range, checked against the range end's header from the same node.

        Raises RangeTooLargeError if the provider refuses the range (no adaptation here;
        see :meth:`fetch_logs`)."""
        return self.fetch_logs_once(from_block, to_block, address=address).logs

    def fetch_logs_once(self, from_block: int, to_block: int, *,
                        address: str | list[str] | None = None,
                        topics: list[Any] | None = None) -> LogBatch:
        """``eth_getLogs`` plus ``eth_getBlockByNumber(to_block)`` in one batch.

        A node that lacks ``to_block`` is behind: its (possibly empty) logs are not trusted,
        we fail over. Logs outside the range or in ``to_block`` with another hash mean the
        node changed under us: retried.
        """
        if to_block < from_block:
            raise ValueError(f"empty range {from_block}..{to_block}")
        log_filter: dict[str, Any] = {"fromBlock": hex(from_block), "toBlock": hex(to_block)}
        if address is not None:
            log_filter["address"] = address
        if topics is not None:
            log_filter["topics"] = topics

        def check(results: list[Any]) -> None:
            logs, header = results
            if header is None:
                raise NodeBehindError(
                    f"block {to_block} not available yet on {self.endpoint_label}")
            if not isinstance(logs, list):
                raise TransientRpcError("eth_getLogs result is not a list")
            end_hash = str(header.get("hash", "")).lower()
            for entry in logs:
                number = int(entry["blockNumber"], 16)
                if not from_block <= number <= to_block:
                    raise TransientRpcError(
                        f"eth_getLogs returned block {number} outside {from_block}..{to_block}")
                if number == to_block and str(entry.get("blockHash", "")).lower() != end_hash:
                    raise TransientRpcError(f"block {to_block} changed during eth_getLogs")

        logs, header = self.batch(
            [("eth_getLogs", [log_filter]), ("eth_getBlockByNumber", [hex(to_block), False])],
            check,
        )
        return LogBatch(logs=logs, from_block=from_block, to_block=to_block, to_header=header)

    def fetch_logs(self, from_block: int, to_block: int, *, address: str | list[str] | None,
                   topics: list[Any] | None = None,
                   controller: RangeController) -> LogBatch:
        """One served request starting at ``from_block``, shrinking on range refusals.

        The controller picks the span; the result covers ``from_block..batch.to_block``
        (``<= to_block``). Raises LogRangeError if a single block is still refused.
        """
        while True:
            end = controller.end_for(from_block, to_block)
            try:
                batch = self.fetch_logs_once(from_block, end, address=address, topics=topics)
            except RangeTooLargeError as exc:
                log.info("rpc.range_too_large", from_block=from_block, to_block=end,
                         kind=exc.hint.kind, endpoint=self.endpoint_label)
                controller.on_too_large(from_block, end, exc.hint, exc.rpc_message[:200])
                continue
            controller.on_success(from_block, end, len(batch.logs))
            return batch


def _read_body(response: requests.Response) -> bytes:
    """The whole body with as few socket reads as the kernel allows.

    ``response.content`` reads 10 KB at a time: ~1,100 reads for a 10,000-log reply, and on
    a prefetch thread (:mod:`listener.chain.prefetch`) each read then waits for the GIL while the
    main thread decodes. A single ``read()`` of a sized body is one buffered read of the
    whole length; urllib3 returns the connection to the pool once the body is consumed."""
    try:
        return response.raw.read(decode_content=True)
    except BaseException:
        response.close()  # a half-read connection must not go back to the pool
        raise


def _method_of(payload: Any) -> str:
    """The method to classify an error of ``payload`` by (a batch counts as its getLogs)."""
    if isinstance(payload, dict):
        return str(payload.get("method", "unknown"))
    if isinstance(payload, list):
        methods = [str(c.get("method")) for c in payload if isinstance(c, dict)]
        return "eth_getLogs" if "eth_getLogs" in methods else "batch"
    return "unknown"


def _redact(url: str) -> str:
    """Hide API keys that providers embed in URL paths or query strings."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}"
