"""Issue 17: an API key in the operator's RPC URL reaches no tenant, log, table, status or metric.

The operator's ``chain.rpc_urls`` carries ``SECRETKEY``; VM creation fails the way ``requests``
fails (quoting the URL), once temporarily and once for good (a dead letter), then succeeds.
"""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests
import structlog
import yaml
from prometheus_client.exposition import generate_latest

from listener.cli.main import main
from listener.config import Config
from listener.reconcile.reconciler import Reconciler
from listener.runtime.logging_setup import configure
from listener.runtime.observability import Metrics
from listener.runtime.wiring import rpc_url_for_vm
from provisioner.backend import VMRef, VMSpec
from tests.support.reconcile_world import EXPIRES, World

SECRET = "SECRETKEY"
OPERATOR_RPC = f"https://x.invalid/v3/{SECRET}"


class LeakyBackend:
    """The simulator's backend, whose first creates fail quoting the operator's RPC URL."""

    def __init__(self, inner: Any, failures: list[Exception]) -> None:
        self.inner = inner
        self.failures = failures
        self.user_data: list[str] = []

    def create(self, spec: VMSpec) -> VMRef:
        self.user_data.append(spec.user_data or "")
        if self.failures:
            raise self.failures.pop(0)
        ref: VMRef = self.inner.create(spec)
        return ref

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def operator_config(world: World) -> Config:
    chain = world.config.chain.model_copy(update={"rpc_urls": [OPERATOR_RPC]})
    return world.config.model_copy(update={"chain": chain})


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure(stream)
    try:
        yield stream
    finally:
        structlog.reset_defaults()


def test_secretkey_appears_nowhere(world: World, logs: io.StringIO, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    config = operator_config(world)
    backend = LeakyBackend(world.services.backend, [
        requests.ConnectionError(f"HTTPSConnectionPool(host='x.invalid', port=443): Max retries "
                                 f"exceeded with url: /v3/{SECRET} (Caused by DNS)"),
        ValueError(f"500 Server Error for url: {OPERATOR_RPC}"),
    ])
    metrics = Metrics()
    services = replace(world.services, config=config, backend=backend,
                       rpc_url_for_vm=rpc_url_for_vm(config), step_observer=metrics.observe_step)
    reconciler = Reconciler(services, choose_node=lambda _size: "pve1")
    for sub_id in (1, 2):
        world.paid(sub_id)
    reconciler.reconcile(1, EXPIRES - 100)  # temporary failure
    reconciler.reconcile(2, EXPIRES - 100)  # dead-lettered
    reconciler.reconcile(1, EXPIRES - 100)  # created
    assert world.vm(1) is not None
    assert "x.invalid" in (world.progress.of(2).last_error or "")
    assert world.store.conn.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0] == 1

    assert backend.user_data and all(SECRET not in text for text in backend.user_data)
    assert "x.invalid" in logs.getvalue() and SECRET not in logs.getvalue()
    assert SECRET not in generate_latest(metrics.registry).decode()
    assert_not_in_database(config.db.path)
    assert SECRET not in status_json(config, tmp_path, capsys)


def assert_not_in_database(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master "
                                                 "WHERE type = 'table'")]
        assert "steps" in tables and "dead_letters" in tables
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):  # noqa: S608 - names from sqlite_master
                assert SECRET not in repr(row), table
    finally:
        conn.close()
    for raw in (path, path.with_name(path.name + "-wal")):
        if raw.exists():
            assert SECRET.encode() not in raw.read_bytes(), raw


def status_json(config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    config_file = tmp_path / "operator.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    capsys.readouterr()
    assert main(["--config", str(config_file), "status", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["subscriptions"] and SECRET not in err
    return out
