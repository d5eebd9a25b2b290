"""``blockhost web serve``: the pages, their config.json and a read-only progress endpoint.

Only a fixed set of in-memory files is served (no directory listing, no file system
paths from the request). ``/status?subscription=N`` tells a subscriber's page how far the
daemon got: the subscription's state and whether its VM runs; never an address, a
ciphertext, an IP or an error text.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
from contextlib import closing
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from listener.config import Config
from listener.errors import UserError
from listener.ops.web import config_bytes, page_config, read_pages

log = logging.getLogger(__name__)

#: Seconds a client may take per request before its socket is closed.
REQUEST_TIMEOUT = 10

#: Relative, so it works behind any path prefix a reverse proxy adds.
STATUS_PATH = "status"

_MAX_ID = 2**63 - 1

_TYPES = {".html": "text/html; charset=utf-8", ".json": "application/json"}


def subscription_progress(config: Config, subscription_id: int) -> dict[str, Any] | None:
    """{subscription, state, vm_running} from the daemon's database, or None if unknown."""
    from listener.chain.journal import Store
    from listener.reconcile.observe import subscription_state
    from listener.reconcile.progress import ProgressStore
    from provisioner.inventory import Inventory

    if not config.db.path.exists():
        return None
    with closing(Store.open(config.db.path)) as store:
        sub = store.subscription(subscription_id)
        if sub is None:
            return None
        inventory = Inventory(store.conn)
        progress = ProgressStore(store.conn).of(subscription_id)
        chain_time = store.chain_state().chain_time
        state = (progress.state if chain_time is None else subscription_state(
            sub, progress, inventory, chain_time, config.grace_seconds))
        record = inventory.live_for_subscription(subscription_id)
    running = record is not None and record.state == "running" and state == "active"
    return {"subscription": subscription_id, "state": str(state), "vm_running": running}


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too; port 0 picks a free one); UserError otherwise."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise UserError(f"--listen {text!r} is not HOST:PORT (e.g. 127.0.0.1:8080)")
    return host, int(port)


class PageServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], config: Config, files: dict[str, bytes],
                 tls: ssl.SSLContext | None = None):
        self.config = config
        self.files = files
        super().__init__(address, _Handler)
        self.scheme = "http"
        if tls is not None:
            # The handshake is made in the request's thread, under its timeout (see
            # _Handler.setup): a client that never finishes it cannot hold up accept().
            self.socket = tls.wrap_socket(self.socket, server_side=True,
                                          do_handshake_on_connect=False)
            self.scheme = "https"

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hangs up, times out or speaks plain HTTP to the TLS port is not
        our error: one debug line, not a traceback on stderr."""
        log.debug("web request from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: PageServer
    timeout = REQUEST_TIMEOUT
    server_version = "blockhost-web"
    sys_version = ""

    def setup(self) -> None:
        super().setup()  # the socket timeout first: it bounds the handshake too
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path in ("", "/"):
            self._send(HTTPStatus.FOUND, b"", "text/plain", extra={"Location": "signup.html"})
        elif url.path == f"/{STATUS_PATH}":
            self._status(url.query)
        elif (body := self.server.files.get(url.path[1:])) is not None:
            suffix = url.path[url.path.rfind("."):]
            self._send(HTTPStatus.OK, body, _TYPES[suffix])
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")

    def _status(self, query: str) -> None:
        values = parse_qs(query).get("subscription", [])
        if len(values) != 1 or not values[0].isdigit() or not 0 < int(values[0]) <= _MAX_ID:
            self._json(HTTPStatus.BAD_REQUEST, {"error": "use status?subscription=<id>"})
            return
        doc = subscription_progress(self.server.config, int(values[0]))
        if doc is None:
            self._json(HTTPStatus.NOT_FOUND, {"subscription": int(values[0]), "state": "unknown",
                                              "vm_running": False})
        else:
            self._json(HTTPStatus.OK, doc)

    def _json(self, status: HTTPStatus, doc: dict[str, Any]) -> None:
        self._send(status, json.dumps(doc).encode(), _TYPES[".json"])

    def _send(self, status: HTTPStatus, body: bytes, ctype: str,
              extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        headers = {"Content-Type": ctype, "Content-Length": str(len(body)),
                   "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
                   "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY", **(extra or {})}
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
        log.debug("web request: " + format, *args)


def make_server(config: Config, listen: str, tls: ssl.SSLContext | None = None) -> PageServer:
    """Bind the server (pages and config.json loaded once), over HTTPS with ``tls``;
    UserError if the port is taken."""
    files = read_pages()
    files["config.json"] = config_bytes(page_config(config, status_url=STATUS_PATH))
    host, port = parse_listen(listen)
    try:
        return PageServer((host, port), config, files, tls)
    except OSError as exc:
        raise UserError(f"cannot listen on {listen}: {exc.strerror}; pick another --listen "
                        "HOST:PORT") from None


def serve_in_thread(server: PageServer) -> threading.Thread:
    """Serve in a daemon thread (the demo and tests); stop with ``server.shutdown()``."""
    thread = threading.Thread(target=server.serve_forever, name="web-serve", daemon=True)
    thread.start()
    return thread


@dataclass(frozen=True)
class RunningPages:
    """A server serving in a background thread: its base URL and how to stop it."""

    url: str
    server: PageServer
    thread: threading.Thread

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def start_pages(config: Config, listen: str) -> RunningPages:
    """Serve the pages in the background (``blockhost demo``); port 0 picks a free one."""
    server = make_server(config, listen)
    host, port = str(server.server_address[0]), int(server.server_address[1])
    shown = f"[{host}]" if ":" in host else host
    return RunningPages(f"{server.scheme}://{shown}:{port}/", server, serve_in_thread(server))
