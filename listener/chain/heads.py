"""Websocket ``newHeads`` wake-ups for the chain loop (``chain.ws_url``).

A head notification is only a hint that the chain moved: it wakes the daemon loop, which then
runs an ordinary scan from the persisted cursor (``eth_getLogs`` over every block since, so a
head the socket dropped or never delivered costs nothing). Nothing received here ever moves
the cursor. While the socket is down the loop simply polls every ``chain.poll_interval``;
the watcher reconnects in the background with a capped exponential backoff.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import structlog
from websockets.sync.client import ClientConnection, connect

from listener.errors import UserError

log = structlog.get_logger(__name__)

#: Reconnect delays: first retry after BACKOFF_INITIAL seconds, doubling up to BACKOFF_MAX.
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0
#: Handshake / request reply timeout, and websocket keepalive (a dead peer is noticed).
REPLY_TIMEOUT = 10.0
PING_INTERVAL = 20.0
#: How often the reader thread looks at the stop flag while no message arrives.
RECV_SLICE = 1.0


class HeadWatcherError(Exception):
    """The endpoint answered, but not in a way we can use (wrong chain, refused subscribe)."""


def redact_url(url: str) -> str:
    """scheme://host[:port] only: providers put API keys in ws URL paths and queries."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}"


class HeadWatcher:
    """Follows ``newHeads`` on one websocket in a daemon thread and wakes waiters per head.

    ``wait_for_head(timeout)`` returns True as soon as a head arrived since the previous call
    (even one that arrived while the caller was busy scanning), False on timeout or stop.
    """

    def __init__(self, ws_url: str, expected_chain_id: int | None, *,
                 stop_event: threading.Event | None = None,
                 on_connected: Callable[[bool], None] | None = None,
                 backoff_initial: float = BACKOFF_INITIAL,
                 backoff_max: float = BACKOFF_MAX) -> None:
        if not ws_url.startswith(("ws://", "wss://")):
            raise UserError(f"chain.ws_url {redact_url(ws_url)} is not a websocket URL; use "
                            "ws://… or wss://…, or remove it to poll only")
        self._url = ws_url
        self.endpoint = redact_url(ws_url)
        self.expected_chain_id = expected_chain_id
        self._on_connected = on_connected
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._cond = threading.Condition()
        self._heads_seen = 0
        self._heads_consumed = 0
        self._stopping = threading.Event()
        #: The owner's stop flag: a waiter returns once it is set (see ``interrupt``).
        self._owner_stop = stop_event
        self._conn: ClientConnection | None = None
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1)
        self._subscription: Any = None
        #: Newest head number announced by the socket (informational only, never trusted).
        self.latest_head: int | None = None
        self.connected = False
        #: Why the last connection attempt or connection ended (redacted), for tests and logs.
        self.last_error: str | None = None
        #: Successful subscriptions so far (1 after the first connect, 2 after a reconnect...).
        self.sessions = 0

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> HeadWatcher:
        self._thread = threading.Thread(target=self._run, name="ws-heads", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close the socket and end the thread; wakes every waiter."""
        self._stopping.set()
        conn = self._conn
        if conn is not None:
            conn.close()
        self.interrupt()
        if self._thread is not None:
            self._thread.join(timeout)

    def interrupt(self) -> None:
        """Wake waiters without a head: call after setting the owner's ``stop_event``."""
        with self._cond:
            self._cond.notify_all()

    # -- waiting -------------------------------------------------------------------------

    @property
    def heads_seen(self) -> int:
        return self._heads_seen

    def wait_for_head(self, timeout: float) -> bool:
        """Block until a head arrives (True), ``timeout`` passes or the watcher stops (False)."""
        with self._cond:
            woke = self._cond.wait_for(
                lambda: self._heads_seen != self._heads_consumed or self._stopped(), timeout)
            fresh = self._heads_seen != self._heads_consumed
            self._heads_consumed = self._heads_seen
            return bool(woke) and fresh

    def _stopped(self) -> bool:
        return self._stopping.is_set() or (
            self._owner_stop is not None and self._owner_stop.is_set())

    def _announce(self, number: int | None) -> None:
        with self._cond:
            if number is not None:
                self.latest_head = number
            self._heads_seen += 1
            self._cond.notify_all()

    def _set_connected(self, value: bool) -> None:
        if value == self.connected:
            return
        self.connected = value
        if self._on_connected is not None:
            self._on_connected(value)

    # -- the socket ----------------------------------------------------------------------

    def _run(self) -> None:
        delay = self._backoff_initial
        while not self._stopping.is_set():
            try:
                with connect(self._url, open_timeout=REPLY_TIMEOUT, ping_interval=PING_INTERVAL,
                             ping_timeout=REPLY_TIMEOUT, close_timeout=2.0,
                             max_size=2**22) as conn:
                    self._conn = conn
                    if self._stopping.is_set():
                        break
                    self._handshake(conn)
                    self.sessions += 1
                    self.last_error = None
                    self._set_connected(True)
                    log.info("ws.subscribed", endpoint=self.endpoint, session=self.sessions)
                    delay = self._backoff_initial
                    self._read(conn)
            except HeadWatcherError as exc:
                self.last_error = str(exc)
                log.error("ws.refused", endpoint=self.endpoint, error=self.last_error)
                delay = self._backoff_max  # a misconfigured endpoint will not fix itself soon
            except Exception as exc:  # noqa: BLE001 - the thread must outlive any socket failure
                self.last_error = self._describe(exc)
                if not self._stopping.is_set():
                    log.warning("ws.disconnected", endpoint=self.endpoint,
                                error=self.last_error, retry_in=round(delay, 2))
            finally:
                self._conn = None
                self._set_connected(False)
            if self._stopping.wait(delay):
                break
            delay = min(self._backoff_max, delay * 2)
        log.info("ws.stopped", endpoint=self.endpoint)

    def _request(self, conn: ClientConnection, method: str, params: list[Any]) -> Any:
        """One JSON-RPC call before any subscription exists (so the next message is the reply)."""
        request_id = next(self._ids)
        conn.send(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method,
                              "params": params}))
        while True:
            reply = json.loads(conn.recv(timeout=REPLY_TIMEOUT))
            if isinstance(reply, dict) and reply.get("id") == request_id:
                break
        if reply.get("error"):
            message = str(reply["error"].get("message", reply["error"]))[:200]
            raise HeadWatcherError(f"{self.endpoint} refused {method}: {message}")
        return reply.get("result")

    def _handshake(self, conn: ClientConnection) -> None:
        chain_id = int(str(self._request(conn, "eth_chainId", [])), 16)
        if self.expected_chain_id is not None and chain_id != self.expected_chain_id:
            raise HeadWatcherError(
                f"websocket endpoint {self.endpoint} serves chain id {chain_id}, expected "
                f"{self.expected_chain_id}; fix chain.ws_url or chain.chain_id (polling only "
                "until then)")
        self._subscription = self._request(conn, "eth_subscribe", ["newHeads"])

    def _read(self, conn: ClientConnection) -> None:
        while not self._stopping.is_set():
            try:
                raw = conn.recv(timeout=RECV_SLICE)
            except TimeoutError:
                continue
            try:
                message = json.loads(raw)
                params = message["params"]
                if message.get("method") != "eth_subscription" or \
                        params.get("subscription") != self._subscription:
                    continue
                number = params["result"].get("number")
                head = int(number, 16) if isinstance(number, str) else None
            except (ValueError, KeyError, TypeError, AttributeError):
                log.warning("ws.bad_message", endpoint=self.endpoint)
                continue
            self._announce(head)

    def _describe(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}".replace(self._url, self.endpoint)
        return text[:200]
