"""Shared fixtures: real anvil chains and real PVE simulator processes on loopback.

Anvil: ``anvil`` (one chain per test), ``module_anvil`` (one per module), ``w3`` (web3 on
``anvil``) and ``chain`` (``module_anvil`` carrying the module's ``PER_BLOCK`` emitter logs).
Simulator: ``pvesim`` (one root-token simulator per test) and ``module_sims`` (starts the
simulators a module shares, each test resetting the one it uses). Both: ``dev_env`` (what
``blockhost demo`` runs on, for tests that start the real listener).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from web3 import Web3

from listener.devkit.devchain import Anvil, start_anvil
from listener.devkit.devenv import DevEnv, start_dev_env
from listener.devkit.log_emitter import emit_logs, install_log_emitter
from provisioner.pvesim.launcher import PveSim
from tests.support.pve import StartSim, start_sim


@pytest.fixture
def anvil(tmp_path: Path) -> Iterator[Anvil]:
    """A fresh anvil chain for one test (automine)."""
    chain = start_anvil(tmp_path / "anvil")
    try:
        yield chain
    finally:
        chain.stop()


@pytest.fixture(scope="module")
def module_anvil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Anvil]:
    """One anvil chain shared by the tests of a module (use evm_snapshot to isolate)."""
    chain = start_anvil(tmp_path_factory.mktemp("anvil"))
    try:
        yield chain
    finally:
        chain.stop()


@pytest.fixture
def w3(anvil: Anvil) -> Web3:
    return Web3(Web3.HTTPProvider(anvil.url, request_kwargs={"timeout": 30}))


@pytest.fixture(scope="module")
def chain(module_anvil: Anvil, request: pytest.FixtureRequest) -> Anvil:
    """``module_anvil`` with the log emitter installed and, block after block, as many logs as
    the test module's ``PER_BLOCK`` list says (each module picks the shape it needs)."""
    install_log_emitter(module_anvil.url)
    emit_logs(module_anvil.url, request.module.PER_BLOCK)
    return module_anvil


@pytest.fixture
def pvesim(tmp_path: Path) -> Iterator[PveSim]:
    """A PVE API simulator process over HTTPS (root token, two nodes, template 9001, fast
    clones)."""
    sim = start_sim(tmp_path / "pvesim", pool_scoped=False, nodes=("pve1", "pve2"),
                    template_vmid=9001, clone_seconds=0.2)
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture(scope="module")
def module_sims(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartSim]:
    """Starts simulators shared by one module's tests (``start_sim``'s options, each in its
    own directory); all of them stop when the module ends."""
    started: list[PveSim] = []

    def start(**options: Any) -> PveSim:
        started.append(start_sim(tmp_path_factory.mktemp("sim"), **options))
        return started[-1]

    try:
        yield start
    finally:
        for sim in started:
            sim.stop()


@pytest.fixture
def dev_env(tmp_path: Path) -> Iterator[DevEnv]:
    """anvil + contracts + the simulator + a config for the real listener (2 confirmations,
    1 grace day, fast clones); the listener itself is started by the test."""
    environment = start_dev_env(tmp_path / "env", confirmations=2, grace_days=1,
                                clone_seconds=0.2)
    try:
        yield environment
    finally:
        environment.close()
