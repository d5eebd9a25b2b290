"""The HTTPS server: TLS per connection, one thread per client, PVE's response envelope.

Connections and answers only; what a request means is decided in :mod:`.api` (PVE API) and
:mod:`.control_routes` (control API).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from provisioner.pvesim.errors import DropConnection, SimError
from provisioner.pvesim.server.api import ApiRequest, serve_api
from provisioner.pvesim.server.control_routes import serve_control
from provisioner.pvesim.server.routes import API_PREFIX
from provisioner.pvesim.simulator import Simulator

MAX_BODY = 1 << 20


def _reason(message: str) -> str:
    """A message made safe for an HTTP status line (one line, latin-1)."""
    line = " ".join(message.strip().split())
    return line.encode("latin-1", "replace").decode("latin-1")[:1000] or "Error"


class PveSimServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], sim: Simulator, ssl_context: ssl.SSLContext,
                 token_id: str, token_secret: str, *, quiet: bool = False) -> None:
        host = address[0]
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        self.sim = sim
        self.ssl_context = ssl_context
        self.token_id = token_id
        self.token_secret = token_secret
        self.quiet = quiet
        self._log_lock = threading.Lock()

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = self.socket.accept()
        # headers and body go out in separate writes: without NODELAY, Nagle + delayed ACK
        # add ~40 ms to every response
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # the TLS handshake happens in the handler thread (Handler.setup), not in accept()
        ssock = self.ssl_context.wrap_socket(sock, server_side=True,
                                             do_handshake_on_connect=False)
        return ssock, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ssl.SSLError, ConnectionError, TimeoutError, OSError)):
            return
        super().handle_error(request, client_address)

    def log(self, line: str) -> None:
        if self.quiet:
            return
        with self._log_lock:
            sys.stderr.write(f"{time.strftime('%H:%M:%S')} {line}\n")
            sys.stderr.flush()


class Handler(BaseHTTPRequestHandler):
    server: PveSimServer
    protocol_version = "HTTP/1.1"
    server_version = "pve-api-daemon/3.0"
    sys_version = ""
    timeout = 60

    def setup(self) -> None:
        self.request.settimeout(self.timeout)
        self.request.do_handshake()
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise SimError(413, "request entity too large")
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, payload: Any, reason: str | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status, reason)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=0")
        self.send_header("Pragma", "no-cache")
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _send_error(self, exc: SimError) -> None:
        payload: dict[str, Any] = {"data": None, "message": exc.message.rstrip("\n") + "\n"}
        if exc.errors:
            payload["errors"] = exc.errors
        self._send(exc.status, payload, _reason(exc.message))

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.request.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.request.close()

    def _is_loopback(self) -> bool:
        host = self.client_address[0]
        try:
            addr = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return addr.is_loopback

    def _dispatch(self, method: str) -> None:
        path = urlsplit(self.path).path
        try:
            status = self._answer(method, self._read_body())
        except DropConnection:
            status = 0
            self._drop()
        except SimError as exc:
            status = exc.status
            self._send_error(exc)
        except (ConnectionError, ssl.SSLError, TimeoutError):
            status = 0
            self.close_connection = True
        except Exception as exc:  # noqa: BLE001 - a bug in the simulator must not kill it
            status = 500
            self._send_error(SimError(500, "simulator internal error: "
                                           f"{type(exc).__name__}: {exc}"))
        self.server.log(f"{self.client_address[0]} {method} {path} -> {status or 'dropped'}")

    def _answer(self, method: str, body: bytes) -> int:
        """Serve the request and send the answer; returns the HTTP status sent."""
        split = urlsplit(self.path)
        path = split.path
        if path.startswith("/_sim/") or path == "/_sim":
            if not self._is_loopback():
                raise SimError(403, "control API is only available from loopback")
            self._send(200, serve_control(self.server.sim, method, path, body))
        elif path == API_PREFIX or path.startswith(API_PREFIX + "/"):
            req = ApiRequest(method, path[len(API_PREFIX):] or "/", split.query, body,
                             self.headers.get("Authorization"), self.headers.get("Content-Type"))
            token = (self.server.token_id, self.server.token_secret)
            self._send(200, {"data": serve_api(self.server.sim, token, req)})
        else:
            raise SimError(501, f"Method '{method} {path}' not implemented")
        return 200


def make_ssl_context(cert_chain_path: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_chain_path)
    return ctx


def start_ticker(sim: Simulator, interval: float = 0.01) -> threading.Thread:
    """A daemon thread that finishes due tasks even when no request comes in."""

    def loop() -> None:
        while True:
            try:
                sim.tick()
            except Exception as exc:  # noqa: BLE001 - keep ticking; report once per failure
                sys.stderr.write(f"pvesim ticker error: {type(exc).__name__}: {exc}\n")
            time.sleep(interval)

    thread = threading.Thread(target=loop, name="pvesim-ticker", daemon=True)
    thread.start()
    return thread
