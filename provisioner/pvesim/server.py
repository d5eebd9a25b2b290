"""HTTPS front end of the simulator: PVE's ``/api2/json`` envelope plus a ``/_sim`` control API.

PVE conventions reproduced here:

* success: ``200`` with ``{"data": ...}``;
* errors: the message is the HTTP reason phrase, the body is ``{"data": null, "message": "...\\n"}``
  and, for parameter errors (400), ``"errors": {param: message}``;
* ``Authorization: PVEAPIToken=USER@REALM!TOKENID=SECRET`` (401 when missing or wrong);
* form-encoded POST/PUT bodies, query parameters for GET/DELETE;
* permission check (403) before parameter verification (400) before the handler.

The control API (``/_sim/...``, plain JSON, no auth) answers loopback clients only:
``GET /_sim/state``; ``GET|POST|DELETE /_sim/faults``; ``POST /_sim/vms`` (a VM made behind the
API's back, e.g. a foreign one); ``POST|DELETE /_sim/vms/{vmid}`` (out-of-band edits: lock,
pool, status, config); ``POST /_sim/nodes/{node}`` (online/offline, capacity);
``POST /_sim/tasks/{upid}/finish``; ``POST /_sim/reset``.

A fault is ``{"op": <endpoint op or "*">, "mode": ..., "count": N, "skip": N, "vmid"/"newid"/
"node": filters, "message", "status", "seconds"}`` with mode one of ``http_error`` (status +
message in the reason phrase, before any side effect; e.g. 500/503/595), ``fail_task`` (the
UPID task ends with ``message``, after PVE's own cleanup), ``hang`` (the task never ends until
finished over the control API), ``slow_task`` (the task takes ``seconds``), ``drop_connection``
(side effect done, answer never sent) and ``latency``. Faults live in the state file, so they
survive a restart.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from provisioner.pvesim import params as P
from provisioner.pvesim.state import TASK_OPS, SimError, Simulator

API_PREFIX = "/api2/json"
TOKEN_RE = re.compile(r"^(?P<user>[^@!=\s]+@[^@!=\s]+)!(?P<tokenid>[A-Za-z][A-Za-z0-9._\-]*)="
                      r"(?P<secret>\S+)$")
MAX_BODY = 1 << 20


class DropConnection(Exception):
    """Close the connection without sending a response (fault injection)."""


@dataclass(frozen=True)
class Route:
    method: str
    template: str
    op: str
    regex: re.Pattern[str]


def _compile(template: str) -> re.Pattern[str]:
    pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template)
    return re.compile(f"^{pattern}$")


ROUTE_TABLE: list[tuple[str, str, str]] = [
    ("GET", "/version", "version"),
    ("GET", "/nodes", "nodes"),
    ("GET", "/cluster/resources", "cluster_resources"),
    ("GET", "/cluster/nextid", "nextid"),
    ("GET", "/pools", "pools"),
    ("GET", "/pools/{poolid}", "pool"),
    ("GET", "/nodes/{node}/qemu", "vm_list"),
    ("POST", "/nodes/{node}/qemu", "create"),
    ("POST", "/nodes/{node}/qemu/{vmid}/template", "template"),
    ("GET", "/nodes/{node}/qemu/{vmid}", "vm_index"),
    ("DELETE", "/nodes/{node}/qemu/{vmid}", "destroy"),
    ("POST", "/nodes/{node}/qemu/{vmid}/clone", "clone"),
    ("GET", "/nodes/{node}/qemu/{vmid}/config", "config_get"),
    ("PUT", "/nodes/{node}/qemu/{vmid}/config", "config_put"),
    ("POST", "/nodes/{node}/qemu/{vmid}/config", "config_post"),
    ("PUT", "/nodes/{node}/qemu/{vmid}/resize", "resize"),
    ("GET", "/nodes/{node}/qemu/{vmid}/status/current", "status_current"),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/start", "start"),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/shutdown", "shutdown"),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/stop", "stop"),
    ("POST", "/nodes/{node}/qemu/{vmid}/agent/ping", "agent_ping"),
    ("GET", "/nodes/{node}/tasks/{upid}/status", "task_status"),
    ("GET", "/nodes/{node}/tasks/{upid}/log", "task_log"),
]
ROUTES = [Route(m, t, op, _compile(t)) for m, t, op in ROUTE_TABLE]
assert all((r.method, r.template) in P.ENDPOINTS for r in ROUTES)

#: privilege needed on /vms/{vmid} per operation (PVE's ``permissions.check``)
VM_PRIVS = {
    "destroy": "VM.Allocate",
    "template": "VM.Allocate",
    "config_get": "VM.Audit",
    "config_put": "VM.Config.Options",
    "config_post": "VM.Config.Options",
    "resize": "VM.Config.Disk",
    "status_current": "VM.Audit",
    "start": "VM.PowerMgmt",
    "shutdown": "VM.PowerMgmt",
    "stop": "VM.PowerMgmt",
    "agent_ping": "VM.GuestAgent.Audit",
}


def parse_token(text: str) -> tuple[str, str]:
    """``USER@REALM!TOKENID=SECRET`` -> (``USER@REALM!TOKENID``, ``SECRET``)."""
    m = TOKEN_RE.match(text.strip())
    if not m:
        raise ValueError("API token must look like USER@REALM!TOKENID=SECRET")
    return f"{m.group('user')}!{m.group('tokenid')}", m.group("secret")


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

    # ------------------------------------------------------------------ plumbing

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
        try:
            self.request.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.request.close()
        except OSError:
            pass

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
        split = urlsplit(self.path)
        path = split.path
        status = 200
        try:
            body = self._read_body()
            if path.startswith("/_sim/") or path == "/_sim":
                status = self._control(method, path, body)
            elif path == API_PREFIX or path.startswith(API_PREFIX + "/"):
                status = self._api(method, path[len(API_PREFIX):] or "/", split.query, body)
            else:
                raise SimError(501, f"Method '{method} {path}' not implemented")
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
            self._send_error(SimError(500, f"simulator internal error: {type(exc).__name__}: {exc}"))
        self.server.log(f"{self.client_address[0]} {method} {path} -> {status or 'dropped'}")

    # ------------------------------------------------------------------ PVE API

    def _authenticate(self) -> str:
        header = self.headers.get("Authorization")
        if not header:
            raise SimError(401, "No ticket")
        prefix = "PVEAPIToken="
        if not header.startswith(prefix):
            raise SimError(401, "No ticket")
        try:
            token_id, secret = parse_token(header[len(prefix):])
        except ValueError:
            raise SimError(401, "permission denied - invalid PVE API token") from None
        ok_id = hmac.compare_digest(token_id.encode(), self.server.token_id.encode())
        ok_secret = hmac.compare_digest(secret.encode(), self.server.token_secret.encode())
        if not (ok_id and ok_secret):
            raise SimError(401, "permission denied - invalid PVE API token")
        return token_id

    def _api(self, method: str, rel: str, query: str, body: bytes) -> int:
        sim = self.server.sim
        sim.tick()
        token_id = self._authenticate()
        rel = rel.rstrip("/") or "/"
        route = None
        path_params: dict[str, str] = {}
        for candidate in ROUTES:
            m = candidate.regex.match(rel)
            if m and candidate.method == method:
                route = candidate
                path_params = {k: unquote(v) for k, v in m.groupdict().items()}
                break
        if route is None:
            raise SimError(501, f"Method '{method} {API_PREFIX}{rel}' not implemented")

        raw: dict[str, str] = dict(parse_qsl(query, keep_blank_values=True))
        if method in ("POST", "PUT") and body:
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype == "application/json":
                try:
                    decoded = json.loads(body)
                except ValueError:
                    raise SimError(400, "invalid JSON body") from None
                if not isinstance(decoded, dict):
                    raise SimError(400, "invalid JSON body")
                raw.update({k: v for k, v in decoded.items() if v is not None})
            else:
                raw.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        for key, value in path_params.items():
            raw[key] = value

        self._check_permissions(token_id, route, raw)
        try:
            p = P.verify(method, route.template, raw)
        except P.ParamError as exc:
            raise SimError(400, "Parameter verification failed.", exc.errors) from None

        vmid = p.get("vmid")
        fault = sim.take_fault(route.op, vmid=vmid, node=p.get("node"), newid=p.get("newid"))
        if fault is not None:
            mode = fault["mode"]
            if mode == "http_error":
                raise SimError(fault["status"], fault.get("message") or "simulated failure")
            if mode == "latency":
                time.sleep(fault["seconds"])
                fault = None
            elif mode == "hang" and route.op not in TASK_OPS:
                time.sleep(fault["seconds"])
                raise DropConnection()

        result = self._call(route.op, token_id, p, fault)
        if fault is not None and fault["mode"] == "drop_connection":
            raise DropConnection()
        self._send(200, {"data": result})
        return 200

    def _check_permissions(self, token_id: str, route: Route, raw: dict[str, str]) -> None:
        sim = self.server.sim
        if route.op == "clone":
            sim.check_perm(token_id, f"/vms/{raw.get('vmid')}", "VM.Clone")
            pool = raw.get("pool")
            if pool:
                sim.check_perm(token_id, f"/pool/{pool}", "VM.Allocate")
            else:
                sim.check_perm(token_id, f"/vms/{raw.get('newid')}", "VM.Allocate")
        elif route.op == "create":
            pool = raw.get("pool")
            if pool:
                sim.check_perm(token_id, f"/pool/{pool}", "VM.Allocate")
            else:
                sim.check_perm(token_id, f"/vms/{raw.get('vmid')}", "VM.Allocate")
        elif route.op == "pool":
            sim.check_perm(token_id, f"/pool/{raw.get('poolid')}", "Pool.Audit")
        elif route.op in VM_PRIVS:
            sim.check_perm(token_id, f"/vms/{raw.get('vmid')}", VM_PRIVS[route.op])

    def _call(self, op: str, token_id: str, p: dict[str, Any], fault: dict[str, Any] | None) -> Any:
        sim = self.server.sim
        node = p.get("node")
        vmid = p.get("vmid")
        handlers: dict[str, Callable[[], Any]] = {
            "version": sim.version,
            "nodes": sim.nodes,
            "cluster_resources": lambda: sim.cluster_resources(token_id, p.get("type")),
            "nextid": lambda: sim.nextid(p.get("vmid")),
            "pools": lambda: sim.pools(token_id, p.get("poolid")),
            "pool": lambda: sim.pool(token_id, p["poolid"]),
            "vm_list": lambda: sim.vm_list(token_id, node),
            "vm_index": lambda: sim.vm_index(token_id, node, vmid),
            "destroy": lambda: sim.destroy(token_id, node, vmid, p, fault),
            "clone": lambda: sim.clone(token_id, node, vmid, p, fault),
            "create": lambda: sim.qm_create(token_id, node, p, fault),
            "template": lambda: sim.qm_template(token_id, node, vmid, p, fault),
            "config_get": lambda: sim.config_get(token_id, node, vmid),
            "config_put": lambda: sim.config_update(token_id, node, vmid, p, background=False,
                                                    fault=fault),
            "config_post": lambda: sim.config_update(token_id, node, vmid, p, background=True,
                                                     fault=fault),
            "resize": lambda: sim.resize(token_id, node, vmid, p, fault),
            "status_current": lambda: sim.status_current(token_id, node, vmid),
            "start": lambda: sim.power(token_id, node, vmid, "start", p, fault),
            "shutdown": lambda: sim.power(token_id, node, vmid, "shutdown", p, fault),
            "stop": lambda: sim.power(token_id, node, vmid, "stop", p, fault),
            "agent_ping": lambda: sim.agent_ping(token_id, node, vmid),
            "task_status": lambda: sim.task_status(token_id, node, p["upid"]),
            "task_log": lambda: sim.task_log(token_id, node, p["upid"], p.get("start", 0),
                                             p.get("limit", 50)),
        }
        return handlers[op]()

    # ------------------------------------------------------------------ control API

    def _control(self, method: str, path: str, body: bytes) -> int:
        if not self._is_loopback():
            raise SimError(403, "control API is only available from loopback")
        sim = self.server.sim
        sim.tick()
        try:
            data: Any = json.loads(body) if body else {}
        except ValueError:
            raise SimError(400, "control API expects a JSON body") from None
        parts = [unquote(p) for p in path.strip("/").split("/")[1:]]
        result: Any
        if parts == ["state"] and method == "GET":
            result = sim.snapshot()
        elif parts == ["faults"] and method == "GET":
            result = sim.snapshot()["faults"]
        elif parts == ["faults"] and method == "POST":
            specs = data.get("faults") if isinstance(data, dict) and "faults" in data else [data]
            if not all(isinstance(s, dict) for s in specs):
                raise SimError(400, "a fault is a JSON object")
            added = [sim.add_fault(s) for s in specs]
            result = added[0] if len(added) == 1 else added
        elif parts == ["faults"] and method == "DELETE":
            sim.clear_faults()
            result = {"cleared": True}
        elif parts == ["vms"] and method == "POST":
            result = sim.create_vm(data)
        elif len(parts) == 2 and parts[0] == "vms" and method in ("POST", "DELETE"):
            try:
                vmid = int(parts[1])
            except ValueError:
                raise SimError(400, "vmid must be an integer") from None
            if method == "POST":
                result = sim.update_vm(vmid, data)
            else:
                sim.delete_vm(vmid)
                result = {"deleted": vmid}
        elif len(parts) == 2 and parts[0] == "nodes" and method == "POST":
            result = sim.set_node(parts[1], data)
        elif len(parts) == 3 and parts[0] == "tasks" and parts[2] == "finish" and method == "POST":
            result = sim.finish_task(parts[1], str(data.get("exitstatus", "OK")))
        elif parts == ["reset"] and method == "POST":
            sim.reset()
            result = {"reset": True}
        else:
            raise SimError(404, f"no control endpoint {method} {path}")
        self._send(200, result)
        return 200


def make_ssl_context(cert_chain_path: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_chain_path)
    return ctx


def start_ticker(sim: Simulator, interval: float = 0.01) -> threading.Thread:
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
