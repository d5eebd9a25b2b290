"""A listener started during an outage waits it out instead of crash-looping.

The real ``blockhost listen`` starts (as systemd runs it, with a notify socket) while its RPC
(a fault proxy refusing everything) or Proxmox (the simulator, stopped) is down: it says READY,
stays up, and /healthz is red naming what it waits for, and nothing is scanned, reserved,
cloned or minted. Once the outage ends the start gate opens and a subscription bought meanwhile
gets its VM and NFT exactly once. A wrong chain id is not an outage: exit 1 at once.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from listener.devkit.devenv import DevEnv, start_dev_env
from listener.devkit.fault_proxy import RpcProxy
from listener.userkit.subscriber import subscribe
from tests.support.systemd_notify import NotifySocket, start_listener

pytestmark = pytest.mark.slow


@pytest.fixture
def env(tmp_path: Path) -> Iterator[DevEnv]:
    dev = start_dev_env(tmp_path / "dev", confirmations=2, grace_days=1, clone_seconds=0.2)
    try:
        yield dev
    finally:
        dev.close()


class Systemd:
    """The notify socket, drained as systemd drains it (a full datagram queue would block the
    daemon's next notification); the messages after READY=1 are kept in ``seen``."""

    def __init__(self) -> None:
        self.sock = NotifySocket()
        self.seen: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)

    def wait_ready(self, process: subprocess.Popen[bytes]) -> bool:
        ready = self.sock.wait_for("READY=1", process)
        if ready:
            self._thread.start()
        return ready

    def _drain(self) -> None:
        while not self._stop.is_set():
            message = self.sock.receive(0.2)
            if message is not None:
                self.seen.append(message)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def notify() -> Iterator[Systemd]:
    systemd = Systemd()
    try:
        yield systemd
    finally:
        systemd.close()


def point_rpc_at(env: DevEnv, url: str) -> None:
    """The listener's chain.rpc_urls (tenants keep vm.rpc_url: the real anvil)."""
    config = yaml.safe_load(env.config_path.read_text())
    config["chain"]["rpc_urls"] = [url]
    env.config_path.write_text(yaml.safe_dump(config))


def listen(env: DevEnv, notify: Systemd) -> subprocess.Popen[bytes]:
    process = start_listener(env.config_path, notify.sock, env.listener_log)
    env.listeners.append(process)  # env.close() stops it
    assert notify.wait_ready(process), errors(env)
    return process


def errors(env: DevEnv) -> str:
    err = Path(f"{env.listener_log}.err")
    return err.read_text(errors="replace") if err.exists() else ""


def healthz(env: DevEnv) -> tuple[int, dict[str, Any]] | None:
    base = env.observability_url()
    if base is None:
        return None
    reply = requests.get(f"{base}/healthz", timeout=10)
    return reply.status_code, reply.json()


def waiting_for(env: DevEnv, what: str, process: subprocess.Popen[bytes]) -> list[str]:
    """The red /healthz problems once they name the wait for ``what`` (and the gate has
    retried at least once: it waits, it is not stuck in its first try)."""

    def red() -> list[str] | None:
        answer = healthz(env)
        if answer is None or answer[0] != 503:
            return None
        starting = [p for p in answer[1]["problems"] if p.startswith("starting: ")]
        retried = env.listener_log.read_text(errors="replace").count('"start.waiting"') >= 2
        return answer[1]["problems"] if starting and retried else None

    problems: list[str] = env.wait_for(f"/healthz to name the wait for {what}", red,
                                       timeout=120, listener=process)
    assert any(p.startswith(f"starting: waiting for {what}: ") for p in problems), problems
    return problems


def buy(env: DevEnv) -> int:
    user = env.user(1)
    env.fund(user)
    return subscribe(env.w3, user, subscription_contract=env.deployment["subscriptions"],
                     server_public_key=env.server_public_key, plan_id=1,
                     days=5).subscription_id


def nothing_provisioned(env: DevEnv) -> None:
    """No event journaled, no VM reserved, no mint signed (the signer's table may not even
    exist yet: the services are built inside the gate)."""
    tables = {r[0] for r in env.db_rows("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for table in ("vms", "tx_requests", "subscriptions", "events"):
        if table in tables:
            assert env.db_rows(f"SELECT COUNT(*) FROM {table}") == [(0,)], table  # noqa: S608 - fixed table names


def served_exactly_once(env: DevEnv, sub_id: int, process: subprocess.Popen[bytes]) -> None:
    from listener.chain.contracts import load_abi

    def active() -> dict[str, Any] | None:
        row = env.subscription(sub_id)
        return row if row and row["state"] == "active" and row["nft"] else None

    row = env.wait_for("the subscription bought during the outage to be served", active,
                       timeout=180, listener=process)
    assert row["vm"]["power"] == "running" and row["nft"]["token_id"] is not None
    assert env.db_rows("SELECT subscription_id FROM vms") == [(sub_id,)]
    assert [r[0] for r in env.db_rows("SELECT idempotency_key FROM tx_requests")] == \
        [f"mint:sub:{sub_id}"]
    nft = env.w3.eth.contract(address=env.deployment["nft"], abi=load_abi("AccessCredentialNFT"))
    assert nft.functions.totalSupply().call() == 1
    assert len([vm for vm in env.sim.state()["vms"] if vm.get("pool") == "blockhost"]) == 1

    def green() -> bool:
        answer = healthz(env)
        return answer is not None and not any(
            p.startswith("starting: ") for p in answer[1]["problems"])

    env.wait_for("/healthz to drop the start wait", green, timeout=60, listener=process)


def test_rpc_down_at_start_is_waited_out(env: DevEnv, notify: Systemd) -> None:
    with RpcProxy(env.anvil.url, fault_rate=1.0, fault_kinds=("http_503",)) as proxy:
        point_rpc_at(env, proxy.url)
        process = listen(env, notify)
        waiting_for(env, "RPC", process)
        sub_id = buy(env)
        env.mine(5)
        waiting_for(env, "RPC", process)
        assert process.poll() is None
        nothing_provisioned(env)
        assert proxy.methods["eth_getLogs"] == 0  # nothing scanned
        assert any(m.startswith("STATUS=starting: waiting for RPC: ") for m in notify.seen)
        assert [vm for vm in env.sim.state()["vms"] if vm.get("pool") == "blockhost"] == []

        proxy.settings.fault_rate = 0.0  # the outage ends
        served_exactly_once(env, sub_id, process)
    assert "STATUS=running: the start gate is open" in notify.seen


def test_proxmox_down_at_start_is_waited_out(env: DevEnv, notify: Systemd) -> None:
    port = env.sim.port
    env.sim.stop()
    process = listen(env, notify)
    waiting_for(env, "Proxmox", process)
    sub_id = buy(env)
    env.mine(5)
    waiting_for(env, "Proxmox", process)
    assert process.poll() is None
    nothing_provisioned(env)

    env.sim = env.sim.restart(port=port)  # the same address, CA, token and (empty) state
    env.stack.callback(env.sim.stop)
    served_exactly_once(env, sub_id, process)


def test_a_wrong_chain_id_after_the_outage_exits_1(env: DevEnv, notify: Systemd) -> None:
    with RpcProxy(env.anvil.url, fault_rate=1.0, fault_kinds=("http_503",)) as proxy:
        point_rpc_at(env, proxy.url)
        process = listen(env, notify)
        waiting_for(env, "RPC", process)
        proxy.settings.chain_id = 1  # the node comes back serving another chain
        proxy.settings.fault_rate = 0.0
        assert process.wait(timeout=120) == 1
    lines = errors(env).strip().splitlines()
    assert len(lines) == 1 and "chain" in lines[0], lines
    nothing_provisioned(env)


def test_sigterm_ends_a_start_blocked_on_a_hanging_rpc(env: DevEnv,
                                                        notify: Systemd) -> None:
    with RpcProxy(env.anvil.url, fault_rate=1.0, fault_kinds=("http_503",)) as proxy:
        point_rpc_at(env, proxy.url)
        process = listen(env, notify)
        waiting_for(env, "RPC", process)
        # every request now hangs far longer than the guard below waits for the exit
        proxy.settings.fault_kinds = ("timeout",)
        proxy.settings.timeout_sleep = 3_600.0
        hung = proxy.requests
        env.wait_for("a request to hang", lambda: proxy.requests > hung, timeout=120,
                     listener=process)
        process.terminate()
        assert process.wait(timeout=60) == 0
    assert "daemon.stopping" in env.listener_log.read_text(errors="replace")
    nothing_provisioned(env)


def test_the_gate_retries_outages_and_raises_what_waiting_cannot_fix() -> None:
    from listener.chain.rpc import TransientRpcError
    from listener.errors import UserError
    from listener.runtime.observability import HealthState
    from listener.runtime.start_gate import StartGate, StartStep, backoff

    health, stop, tries = HealthState(), threading.Event(), []
    seen_starting: list[str | None] = []

    def flaky() -> None:
        tries.append("flaky")
        if len(tries) < 3:
            raise TransientRpcError("eth_chainId: HTTP 503 for http://rpc.example/v3/abcdef")

    def later() -> None:
        seen_starting.append(health.starting)

    gate = StartGate(health, stop, delay=lambda _failures: 0.0)
    assert gate.open([StartStep("a", "RPC", flaky), StartStep("b", "Proxmox", later)])
    assert tries == ["flaky"] * 3 and health.starting is None
    assert seen_starting[0] is not None and seen_starting[0].startswith("waiting for RPC: ")
    assert "abcdef" not in seen_starting[0]  # the URL's key is redacted

    def refused() -> None:
        raise UserError("database follows chain 1; point db.path at a new file")

    with pytest.raises(UserError):
        gate.open([StartStep("a", "RPC", refused)])
    stop.set()
    assert not gate.open([StartStep("a", "RPC", flaky)])
    assert 1.0 <= backoff(1) <= 1.1 and 2.0 <= backoff(2) <= 2.2
    assert backoff(50) == 60.0


def test_old_markers_found_once_proxmox_answers_exit_1(env: DevEnv, notify: Systemd) -> None:
    """The upgrade day and an outage at once: Proxmox is down when `listen` starts, so its
    pre-start markers check is skipped; the gate makes it once Proxmox answers, and stops."""
    from listener.chain.deployment import deployment_id
    from listener.devkit.devenv import CHAIN_ID, sim_vm
    from tests.system.test_upgrade_markers import made_before_ids

    sub_id = buy(env)
    first = listen(env, notify)
    served_exactly_once(env, sub_id, first)
    vm = (env.subscription(sub_id) or {})["vm"]
    first.terminate()
    assert first.wait(timeout=30) == 0
    made_before_ids(env, vm["vmid"],
                    deployment_id(CHAIN_ID, env.deployment["subscriptions"], env.deployment["nft"]))
    old = {k: v for k, v in (sim_vm(env.sim, vm["vmid"]) or {}).items() if k != "uptime"}
    port = env.sim.port
    env.sim.stop()

    again = Systemd()
    try:
        process = listen(env, again)
        waiting_for(env, "Proxmox", process)
        env.sim = env.sim.restart(port=port)  # the same state: the old-marker VM is back
        env.stack.callback(env.sim.stop)
        assert process.wait(timeout=120) == 1
    finally:
        again.close()
    refusal = [line for line in errors(env).splitlines() if line.startswith("✗ VMs awaiting")]
    assert len(refusal) == 1 and f"VM {vm['vmid']}" in refusal[0], errors(env)[-2000:]
    assert "run `blockhost markers migrate`" in refusal[0]
    now = {k: v for k, v in (sim_vm(env.sim, vm["vmid"]) or {}).items() if k != "uptime"}
    assert now == old  # nothing touched it meanwhile
    assert env.status()["dead_letters"] == 0
