"""Websocket newHeads wake-ups against a real anvil (and the real daemon for the last ones).

A loopback TCP forwarder between the watcher and anvil lets a test cut the socket (anvil
keeps running, its port cannot be reused with --port 0) and check the reconnect.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench import latency
from listener.chain.heads import HeadWatcher, redact_url
from listener.devkit.devchain import Anvil
from listener.errors import UserError
from tests.support.chain import json_rpc

CHAIN_ID = 31337


def until(check: Callable[[], object], timeout: float = 15.0) -> None:
    """Wait for a condition (a generous bound for a slow shared machine, not a timing test)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


class Forwarder:
    """127.0.0.1:<port> -> target port, byte for byte; ``cut()`` drops every live connection."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.accepted = 0
        self._live: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self.accepted += 1
                self._live += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self._lock:
            live, self._live = self._live, []
        for sock in live:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.server.close()
        self.cut()


@pytest.fixture
def forwarder(anvil: Anvil) -> Iterator[Forwarder]:
    fwd = Forwarder(anvil.port)
    try:
        yield fwd
    finally:
        fwd.close()


@pytest.fixture
def watchers() -> Iterator[list[HeadWatcher]]:
    started: list[HeadWatcher] = []
    yield started
    for watcher in started:
        watcher.stop()


def test_heads_wake_a_waiter(anvil: Anvil, watchers: list[HeadWatcher]) -> None:
    watcher = HeadWatcher(anvil.ws_url, CHAIN_ID).start()
    watchers.append(watcher)
    until(lambda: watcher.connected)
    assert watcher.wait_for_head(0.05) is False  # connected, but no block mined yet
    before = int(str(json_rpc(anvil.url, "eth_blockNumber")), 16)
    json_rpc(anvil.url, "anvil_mine", "0x1")
    assert watcher.wait_for_head(15.0) is True
    assert watcher.latest_head == before + 1
    # A head that arrives while nobody waits is not lost: the next wait returns at once.
    json_rpc(anvil.url, "evm_mine")
    until(lambda: watcher.latest_head == before + 2)
    assert watcher.wait_for_head(0.0) is True
    assert watcher.wait_for_head(0.05) is False  # ...and it is consumed by that wait


def test_reconnects_after_the_socket_is_cut(anvil: Anvil, forwarder: Forwarder,
                                            watchers: list[HeadWatcher]) -> None:
    connected_log: list[bool] = []
    watcher = HeadWatcher(f"ws://127.0.0.1:{forwarder.port}", CHAIN_ID,
                          on_connected=connected_log.append, backoff_initial=0.05,
                          backoff_max=0.2).start()
    watchers.append(watcher)
    until(lambda: watcher.connected)
    json_rpc(anvil.url, "evm_mine")
    assert watcher.wait_for_head(15.0)

    forwarder.cut()
    # `connected` flips just before the callback runs, so wait for the callback's record too
    until(lambda: watcher.sessions == 2 and watcher.connected and len(connected_log) == 3)
    assert forwarder.accepted == 2
    assert connected_log == [True, False, True]
    head = int(str(json_rpc(anvil.url, "eth_blockNumber")), 16)
    watcher.wait_for_head(0.0)  # forget anything from before the cut
    json_rpc(anvil.url, "evm_mine")
    assert watcher.wait_for_head(15.0)
    assert watcher.latest_head == head + 1


def test_wrong_chain_id_is_refused(anvil: Anvil, watchers: list[HeadWatcher]) -> None:
    watcher = HeadWatcher(anvil.ws_url, 1, backoff_initial=0.05, backoff_max=0.2).start()
    watchers.append(watcher)
    until(lambda: watcher.last_error is not None)
    assert "serves chain id 31337, expected 1" in watcher.last_error
    json_rpc(anvil.url, "anvil_mine", "0x2")
    assert watcher.wait_for_head(0.3) is False
    assert not watcher.connected and watcher.sessions == 0 and watcher.heads_seen == 0


def test_stop_wakes_a_waiter_and_ends_the_thread(anvil: Anvil) -> None:
    owner_stop = threading.Event()
    watcher = HeadWatcher(anvil.ws_url, CHAIN_ID, stop_event=owner_stop).start()
    until(lambda: watcher.connected)
    results: list[bool] = []
    waiter = threading.Thread(target=lambda: results.append(watcher.wait_for_head(120.0)))
    waiter.start()
    owner_stop.set()
    watcher.interrupt()
    waiter.join(30.0)
    assert results == [False]
    watcher.stop()
    assert watcher._thread is not None and not watcher._thread.is_alive()
    assert not watcher.connected


def test_urls_are_redacted_and_checked() -> None:
    assert redact_url("wss://eth.example.com/v3/SECRETKEY?x=1") == "wss://eth.example.com"
    assert redact_url("ws://user:pw@10.0.0.1:8546/key") == "ws://10.0.0.1:8546"
    with pytest.raises(UserError) as err:
        HeadWatcher("https://eth.example.com/v3/SECRETKEY", CHAIN_ID)
    assert "SECRETKEY" not in str(err.value) and "ws://" in str(err.value)


def test_failures_never_log_the_url_path(capsys: pytest.CaptureFixture[str],
                                         watchers: list[HeadWatcher]) -> None:
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now: every connect fails
    watcher = HeadWatcher(f"ws://127.0.0.1:{port}/v3/SECRETKEY", CHAIN_ID,
                          backoff_initial=0.05, backoff_max=0.1).start()
    watchers.append(watcher)
    until(lambda: watcher.last_error is not None)
    watcher.stop()
    output = capsys.readouterr()
    assert "SECRETKEY" not in (watcher.last_error or "") + output.out + output.err


# -- the real daemon -----------------------------------------------------------------------

@pytest.fixture
def bench_rig(tmp_path: Path) -> Iterator[latency.Rig]:
    with latency.rig(tmp_path / "rig") as the_rig:
        yield the_rig


def _metric(text: str, name: str) -> float | None:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def test_daemon_with_ws_url_journals_without_waiting_for_the_poll(
        bench_rig: latency.Rig) -> None:
    # poll_interval 60: after its start-up scan the loop sleeps a minute, so an event
    # journaled well within 30 s can only have been picked up through a newHeads wake-up.
    listener = bench_rig.start_listener("ws", ws=True, poll_interval=60.0, metrics=True)
    for _ in range(3):
        sub_id, _started = bench_rig.mine_event()
        latency.wait_journaled(listener, sub_id, timeout=30.0)
    listener.check_alive()
    lines = [json.loads(line) for line in listener.log_text().splitlines()
             if "observability.listening" in line]
    port = lines[-1]["port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    assert _metric(metrics, "blockhost_ws_connected") == 1.0
    assert listener.stop() == 0
    assert "ws.stopped" in listener.log_text()


def test_daemon_polls_while_the_websocket_is_down(bench_rig: latency.Rig) -> None:
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: the watcher keeps failing and backing off
    listener = bench_rig.start_listener("down", ws=f"ws://127.0.0.1:{port}/v3/SECRETKEY",
                                        poll_interval=0.2, metrics=True)
    sub_id, _started = bench_rig.mine_event()
    latency.wait_journaled(listener, sub_id, timeout=30.0)  # the poll timer still scans
    port_line = [json.loads(line) for line in listener.log_text().splitlines()
                 if "observability.listening" in line][-1]
    url = f"http://127.0.0.1:{port_line['port']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert _metric(response.read().decode(), "blockhost_ws_connected") == 0.0
    assert listener.stop() == 0
    text = listener.log_text()
    assert "ws.disconnected" in text and f"ws://127.0.0.1:{port}" in text
    assert "SECRETKEY" not in text


def test_latency_bench_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = latency.main(["--samples", "3", "--poll-interval", "0.3", "--json",
                         "--workdir", str(tmp_path / "bench")])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert [m["mode"] for m in report["modes"]] == ["polling", "websocket"]
    for mode in report["modes"]:
        assert mode["samples"] == 3
        assert 0 < mode["p50_ms"] <= mode["p95_ms"] <= mode["max_ms"]


def test_latency_bench_rejects_bad_arguments() -> None:
    with pytest.raises(SystemExit) as exc:
        latency.main(["--modes", "carrier-pigeon"])
    assert exc.value.code == 2


def test_percentile_interpolates_between_ranks() -> None:
    values = [float(v) for v in range(1, 101)]
    assert latency.percentile(values, 50) == pytest.approx(50.5)
    assert latency.percentile(values, 95) == pytest.approx(95.05)
    assert latency.percentile([7.0], 95) == 7.0
