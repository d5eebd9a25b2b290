"""/healthz, /readyz and /metrics over real HTTP on loopback."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import requests

from listener.chain.journal import ChainState
from listener.chain.scanner import Outcome, ScanResult
from listener.runtime.observability import HealthState, Metrics, parse_listen, serve


@pytest.fixture
def endpoint() -> Iterator[tuple[str, Metrics, HealthState]]:
    metrics, health = Metrics(), HealthState(stale_after=60)
    server = serve("127.0.0.1:0", metrics, health)
    host, port = server.server_address[:2]
    try:
        yield f"http://{host}:{port}", metrics, health
    finally:
        server.shutdown()
        server.server_close()


def state(**changes: object) -> ChainState:
    base = {"chain_id": 1, "cursor": 120, "cursor_hash": "0x1", "chain_time": 1_700_000_000,
            "head": 130, "confirmed_head": 118, "halted_reason": None, "applied_block": 110}
    base.update(changes)
    return ChainState(**base)


def test_green_after_a_scan_and_ready_once_caught_up(
        endpoint: tuple[str, Metrics, HealthState]) -> None:
    url, _, health = endpoint
    health.last_scan_ok = health.started_at
    assert requests.get(f"{url}/healthz", timeout=5).json() == {"status": "ok", "problems": []}
    assert requests.get(f"{url}/readyz", timeout=5).status_code == 503
    health.caught_up = True
    assert requests.get(f"{url}/readyz", timeout=5).json() == {"ready": True}


def test_red_when_halted_or_stale_or_db_failing(
        endpoint: tuple[str, Metrics, HealthState]) -> None:
    url, _, health = endpoint
    health.last_scan_ok = health.started_at
    health.halted_reason = "reorg below the confirmed cursor"
    health.caught_up = True
    reply = requests.get(f"{url}/healthz", timeout=5)
    assert reply.status_code == 503 and reply.json()["status"] == "red"
    assert "halted" in reply.json()["problems"][0]
    assert requests.get(f"{url}/readyz", timeout=5).status_code == 503  # halted is not ready
    fresh = HealthState(stale_after=60)
    fresh.last_scan_error = "TransientRpcError: 503"
    assert fresh.problems(now=fresh.started_at + 61)[0].startswith("no successful chain scan")
    assert fresh.problems(now=fresh.started_at + 59) == []
    fresh.db_error = "OperationalError: disk I/O error"
    assert fresh.problems(now=fresh.started_at) == ["database: OperationalError: disk I/O error"]
    fresh.db_error = None
    fresh.signer_alerts = ["insufficient_funds: 0 wei, need 1e15"]
    assert fresh.problems(now=fresh.started_at) == ["signer: insufficient_funds: 0 wei, need 1e15"]


def test_metrics_text_format(endpoint: tuple[str, Metrics, HealthState]) -> None:
    url, metrics, _ = endpoint
    metrics.observe_scan(ScanResult(Outcome.PROGRESSED, 100, 120, new_events=7), state())
    metrics.observe_scan(ScanResult(Outcome.REORGED), state())
    metrics.observe_step("create_vm", "done", 3.5)
    metrics.observe_totals(dead_letters=2, pending_txs=1, by_state={"active": 4})
    metrics.observe_signer({"gas_bumps": 3})
    reply = requests.get(f"{url}/metrics", timeout=5)
    assert reply.status_code == 200 and reply.headers["Content-Type"].startswith("text/plain")
    text = reply.text
    for line in ("blockhost_chain_head 130.0", "blockhost_chain_confirmed_cursor 110.0",
                 "blockhost_chain_lag_blocks 8.0", "blockhost_events_journaled_total 7.0",
                 'blockhost_reorgs_total{deep="false"} 1.0', "blockhost_dead_letters 2.0",
                 'blockhost_subscriptions{state="active"} 4.0',
                 'blockhost_subscriptions{state="failed"} 0.0',
                 'blockhost_signer_events{event="gas_bumps"} 3.0',
                 'blockhost_step_duration_seconds_count{action="create_vm",result="done"} 1.0'):
        assert line in text, line
    assert requests.get(f"{url}/nope", timeout=5).status_code == 404


@pytest.mark.parametrize(("value", "expected"), [
    ("127.0.0.1:9100", ("127.0.0.1", 9100)), ("[::1]:0", ("::1", 0)), (":9100", ("127.0.0.1", 9100)),
])
def test_parse_listen(value: str, expected: tuple[str, int]) -> None:
    assert parse_listen(value) == expected


def test_parse_listen_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="host:port"):
        parse_listen("localhost")


def test_serves_on_ipv6_loopback() -> None:
    try:
        server = serve("[::1]:0", Metrics(), HealthState())
    except OSError as exc:  # a sandbox without IPv6
        pytest.skip(f"no IPv6 loopback here: {exc}")
    try:
        port = server.server_address[1]
        assert requests.get(f"http://[::1]:{port}/readyz", timeout=5).status_code == 503
    finally:
        server.shutdown()
        server.server_close()


def test_a_client_that_never_finishes_its_request_is_dropped() -> None:
    """Slow-loris: half a request must not hold a handler thread; others are still served."""
    metrics, health = Metrics(), HealthState(stale_after=60)
    server = serve("127.0.0.1:0", metrics, health, request_timeout=0.3)
    host, port = server.server_address[:2]
    try:
        with socket.create_connection((str(host), port), timeout=30) as slow:
            slow.sendall(b"GET /metr")  # no end of line, no end of headers, ever
            assert requests.get(f"http://{host}:{port}/metrics", timeout=5).status_code == 200
            assert slow.recv(1024) == b""  # the server closed it; 30 s guards a hang only
    finally:
        server.shutdown()
        server.server_close()


def test_an_empty_host_binds_loopback_only() -> None:
    server = serve(":0", Metrics(), HealthState(stale_after=60))
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.shutdown()
        server.server_close()
