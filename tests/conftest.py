"""Shared fixtures: real anvil chains and real PVE simulator processes on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from web3 import Web3

from listener.devkit.devchain import Anvil, start_anvil

SHARED_DIR = Path(__file__).resolve().parent.parent.parent / "shared"


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


@pytest.fixture
def pvesim(tmp_path: Path) -> Iterator[object]:
    """A PVE API simulator process over HTTPS (two nodes, template 9001, fast clones)."""
    from provisioner.pvesim.launcher import start_pvesim

    sim = start_pvesim(tmp_path / "pvesim", nodes=("pve1", "pve2"), template_vmid=9001,
                       clone_seconds=0.2)
    try:
        yield sim
    finally:
        sim.stop()
