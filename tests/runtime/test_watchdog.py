"""Watchdog = liveness, not health: with every RPC call failing, the real daemon keeps sending
WATCHDOG=1 while /healthz turns red, so systemd shows an outage instead of restarting a daemon
whose loop still turns (and SIGABRTing a worker mid-clone)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
import requests
import yaml

from listener.devkit.devenv import DevEnv, start_dev_env
from listener.devkit.fault_proxy import RpcProxy
from tests.support.systemd_notify import NotifySocket, start_listener


@pytest.fixture
def env(tmp_path: Path) -> Iterator[DevEnv]:
    dev = start_dev_env(tmp_path / "dev", clone_seconds=0.2)
    try:
        yield dev
    finally:
        dev.close()


def healthz(url: str) -> tuple[int, str]:
    reply = requests.get(f"{url}/healthz", timeout=10)
    return reply.status_code, reply.text


def count_feeds(notify: NotifySocket, until: float, wanted: int) -> int:
    """WATCHDOG=1 messages received before ``until`` (stops early at ``wanted``)."""
    fed = 0
    while fed < wanted and time.monotonic() < until:
        if notify.receive(0.5) == "WATCHDOG=1":
            fed += 1
    return fed


@pytest.mark.slow
def test_an_rpc_outage_turns_health_red_and_the_watchdog_is_still_fed(env: DevEnv) -> None:
    with RpcProxy(env.anvil.url) as proxy:
        config = yaml.safe_load(env.config_path.read_text())
        config["chain"]["rpc_urls"] = [proxy.url]
        env.config_path.write_text(yaml.safe_dump(config))
        with closing(NotifySocket()) as notify:
            daemon = start_listener(env.config_path, notify, env.listener_log)
            env.listeners.append(daemon)
            assert notify.wait_for("READY=1", daemon), env.listener_log.read_text()[-2000:]
            url = env.observability_url()
            assert url is not None
            # READY comes before the start gate; this outage is one of the running loop's
            env.wait_for("the start gate to open", lambda: "start.gate_open" in
                         env.listener_log.read_text(errors="replace"), listener=daemon)

            # the provider is down: every call of the chain loop and the minter gets a 503
            proxy.settings.fault_kinds = ("http_503",)
            proxy.settings.fault_rate = 1.0
            deadline = time.monotonic() + 300  # a hang guard; health turns red after 60 s
            fed_during_outage = 0
            while (status := healthz(url))[0] == 200:
                assert time.monotonic() < deadline, "/healthz never turned red"
                fed_during_outage += count_feeds(notify, time.monotonic() + 2, 1_000)
            assert status[0] == 503 and "no successful chain scan" in status[1]
            # the loop keeps turning and says so, with the outage still on
            assert count_feeds(notify, deadline, 3) == 3
            assert fed_during_outage >= 3
            assert daemon.poll() is None

