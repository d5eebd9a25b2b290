"""Health, readiness and Prometheus metrics of the daemon, served on ``metrics.listen``.

``/healthz`` is red (503) when effects are halted by a deep reorg, when no chain scan has
succeeded for a while (a stale head: every RPC endpoint failing), or when the database keeps
failing; ``/readyz`` is green once the listener has caught up with the confirmed head;
``/metrics`` is the Prometheus text format. The chain loop updates the numbers; a scrape
never touches the database or the chain.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from listener.chain.journal import ChainState
from listener.chain.scanner import Outcome, ScanResult

log = structlog.get_logger(__name__)


@dataclass
class HealthState:
    """What /healthz and /readyz judge by (updated by the chain loop)."""

    started_at: float = field(default_factory=time.monotonic)
    last_scan_ok: float | None = None
    last_scan_error: str | None = None
    caught_up: bool = False
    halted_reason: str | None = None
    db_error: str | None = None
    signer_alerts: list[str] = field(default_factory=list)
    #: subscriptions whose steps keep failing (an outage of Proxmox or the RPC): still retried
    failing_subscriptions: int = 0
    #: what a start held by an outage waits for (listener.runtime.start_gate); None once open
    starting: str | None = None
    stale_after: float = 120.0

    def problems(self, now: float | None = None) -> list[str]:
        now = time.monotonic() if now is None else now
        found = [f"starting: {self.starting}"] if self.starting else []
        if self.halted_reason:
            found.append(f"halted: {self.halted_reason}")
        reference = self.last_scan_ok if self.last_scan_ok is not None else self.started_at
        if now - reference > self.stale_after:
            found.append(f"no successful chain scan for {now - reference:.0f}s"
                         + (f" (last error: {self.last_scan_error})" if self.last_scan_error
                            else ""))
        if self.db_error:
            found.append(f"database: {self.db_error}")
        found.extend(f"signer: {alert}" for alert in self.signer_alerts)
        if self.failing_subscriptions:
            found.append(f"{self.failing_subscriptions} subscription(s) failing, still retried "
                         "(see `blockhost status`)")
        return found


class Metrics:
    """The daemon's Prometheus metrics in their own registry (no process-global state)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.head = Gauge("blockhost_chain_head", "Newest block number seen", registry=r)
        self.confirmed_head = Gauge("blockhost_chain_confirmed_head",
                                    "Newest block treated as confirmed", registry=r)
        self.cursor = Gauge("blockhost_chain_cursor", "Last block journaled", registry=r)
        self.confirmed_cursor = Gauge("blockhost_chain_confirmed_cursor",
                                      "Last block whose events are applied", registry=r)
        self.lag = Gauge("blockhost_chain_lag_blocks",
                         "Confirmed head minus confirmed cursor", registry=r)
        self.chain_time = Gauge("blockhost_chain_time_seconds",
                                "Timestamp of the confirmed cursor's block", registry=r)
        self.events = Counter("blockhost_events_journaled", "New events journaled", registry=r)
        self.reorgs = Counter("blockhost_reorgs", "Reorgs detected", ["deep"], registry=r)
        self.scan_errors = Counter("blockhost_scan_errors", "Failed chain scans", ["error"],
                                   registry=r)
        self.halted = Gauge("blockhost_effects_halted", "1 while effects are halted", registry=r)
        self.step_seconds = Histogram(
            "blockhost_step_duration_seconds", "Duration of reconcile steps", ["action", "result"],
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600), registry=r)
        self.dead_letters = Gauge("blockhost_dead_letters", "Open dead letters", registry=r)
        self.pending_txs = Gauge("blockhost_pending_transactions",
                                 "Signed transactions not yet confirmed", registry=r)
        self.signer_events = Gauge("blockhost_signer_events",
                                   "Transaction manager events since the database was created "
                                   "(gas bumps, rebroadcasts, reorged out, nonce repairs)",
                                   ["event"], registry=r)
        self.subscriptions = Gauge("blockhost_subscriptions", "Subscriptions by state",
                                   ["state"], registry=r)
        self.ws_connected = Gauge("blockhost_ws_connected",
                                  "1 while the chain.ws_url newHeads subscription is up "
                                  "(0: polling every chain.poll_interval)", registry=r)

    def observe_scan(self, result: ScanResult, state: ChainState) -> None:
        if result.new_events:
            self.events.inc(result.new_events)
        if result.outcome is Outcome.REORGED:
            self.reorgs.labels(deep="false").inc()
        for gauge, value in ((self.head, state.head), (self.confirmed_head, state.confirmed_head),
                             (self.cursor, state.cursor),
                             (self.confirmed_cursor, state.applied_block),
                             (self.chain_time, state.chain_time)):
            if value is not None:
                gauge.set(value)
        if state.confirmed_head is not None and state.applied_block is not None:
            self.lag.set(max(0, state.confirmed_head - state.applied_block))
        self.halted.set(1 if state.halted_reason else 0)

    def observe_signer(self, counters: dict[str, int]) -> None:
        for event, value in counters.items():
            self.signer_events.labels(event=event).set(value)

    def observe_step(self, action: str, result: str, seconds: float) -> None:
        self.step_seconds.labels(action=action, result=result).observe(seconds)

    def observe_totals(self, *, dead_letters: int, pending_txs: int,
                       by_state: dict[str, int]) -> None:
        self.dead_letters.set(dead_letters)
        self.pending_txs.set(pending_txs)
        for state in ("pending", "provisioning", "active", "suspended", "destroyed", "failed"):
            self.subscriptions.labels(state=state).set(by_state.get(state, 0))


#: Seconds a client may take to send its request or read the answer. Without it, a client that
#: sends half a request holds a thread (and its socket) forever; scrapes take milliseconds.
REQUEST_TIMEOUT_SECONDS = 10.0


class _Handler(BaseHTTPRequestHandler):
    server: _ObservabilityServer

    def setup(self) -> None:
        self.request.settimeout(self.server.request_timeout)  # every read and write after this
        super().setup()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, generate_latest(self.server.metrics.registry), CONTENT_TYPE_LATEST)
            return
        health = self.server.health
        if path == "/healthz":
            problems = health.problems()
            self._json(503 if problems else 200,
                       {"status": "red" if problems else "ok", "problems": problems})
        elif path == "/readyz":
            ready = health.caught_up and not health.halted_reason
            self._json(200 if ready else 503, {"ready": ready})
        else:
            self._json(404, {"error": f"no such endpoint {path}; try /healthz, /readyz, /metrics"})

    def _json(self, status: int, body: dict[str, Any]) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return  # scrapes are not worth a log line each


class _ObservabilityServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], metrics: Metrics, health: HealthState,
                 request_timeout: float) -> None:
        super().__init__(address, _Handler)
        self.metrics = metrics
        self.health = health
        self.request_timeout = request_timeout


class _ObservabilityServer6(_ObservabilityServer):
    address_family = socket.AF_INET6


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"metrics.listen must be host:port, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def serve(listen: str, metrics: Metrics, health: HealthState, *,
          request_timeout: float = REQUEST_TIMEOUT_SECONDS) -> _ObservabilityServer:
    """Start the endpoint in a daemon thread; returns the server (``server_address`` has the
    bound port when 0 was asked for). An empty host (``:9100``) means loopback."""
    host, port = parse_listen(listen)
    kind = _ObservabilityServer6 if ":" in host else _ObservabilityServer
    server = kind((host, port), metrics, health, request_timeout)
    threading.Thread(target=server.serve_forever, name="observability", daemon=True).start()
    bound_host, port = server.server_address[:2]
    log.info("observability.listening", host=str(bound_host), port=port,
             endpoints=["/healthz", "/readyz", "/metrics"])
    return server
