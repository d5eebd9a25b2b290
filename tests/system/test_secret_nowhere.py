"""Issue 17, on disk: ``SECRETKEY`` from the operator's RPC URL is in no file the product
writes, and the VM's own secret key is in no archive.

tests/reconcile/test_no_secret_leaves.py checks the user data, logs, every table, status and
metrics; here the same failing-then-succeeding create runs with snippets on disk, the VM's
Terraform directory is written and archived after destroy, and then every byte of every file
below the test directory (database, WAL, snippets, Terraform files, archive, log file) is
searched."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests
import structlog

from listener.reconcile.reconciler import Reconciler
from listener.runtime.logging_setup import configure
from listener.runtime.wiring import rpc_url_for_vm
from provisioner.backend import VMRef, VMSpec
from provisioner.proxmox.backend import ProxmoxAPIBackend
from provisioner.pvesim.launcher import PveSim
from provisioner.terraform.backend import build_terraform_backend
from provisioner.terraform.layout import ARCHIVE, archive
from tests.reconcile.test_no_secret_leaves import (
    OPERATOR_RPC,
    SECRET,
    LeakyBackend,
    operator_config,
)
from tests.support.pve import StartSim
from tests.support.reconcile_world import EXPIRES, World


@pytest.fixture(scope="module")
def module_sim(module_sims: StartSim) -> PveSim:
    return module_sims(pool_scoped=False, snippets=True, nodes=("pve1", "pve2"),
                       template_vmid=9001, clone_seconds=0.05, task_seconds=0.02)


@pytest.fixture
def world(tmp_path: Path, module_sim: PveSim) -> Iterator[World]:
    module_sim.reset()
    w = World(tmp_path, module_sim)
    try:
        yield w
    finally:
        w.store.close()


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "listener.log"
    with open(path, "w", encoding="utf-8") as stream:
        configure(stream)
        try:
            yield path
        finally:
            structlog.reset_defaults()


def files_below(*roots: Path) -> list[Path]:
    return sorted(p for root in roots for p in root.rglob("*") if p.is_file())


def test_secretkey_is_in_no_file(world: World, module_sim: PveSim, tmp_path: Path,
                                 log_file: Path) -> None:
    assert module_sim.snippets_dir is not None
    config = operator_config(world)
    api = ProxmoxAPIBackend(module_sim.url, module_sim.token_id, module_sim.token_secret,
                            verify=str(module_sim.ca_path), pool="blockhost",
                            snippets_dir=module_sim.snippets_dir)
    backend = SpecRecorder(api, [requests.ConnectionError(
        f"HTTPSConnectionPool(host='x.invalid', port=443): Max retries exceeded with url: "
        f"/v3/{SECRET}"), ValueError(f"500 Server Error for url: {OPERATOR_RPC}")])
    services = replace(world.services, config=config, backend=backend,
                       rpc_url_for_vm=rpc_url_for_vm(config))
    reconciler = Reconciler(services, choose_node=lambda _size: "pve1")
    world.paid(1)
    world.paid(2)
    reconciler.reconcile(1, EXPIRES - 100)  # fails, temporarily
    reconciler.reconcile(2, EXPIRES - 100)  # fails for good
    reconciler.reconcile(1, EXPIRES - 100)  # created, user data in a snippet
    snippets = files_below(module_sim.snippets_dir)
    assert snippets and world.vm(1) is not None

    # the Terraform backend's files for the same VM, then its archive after destroy
    tf = build_terraform_backend(api, token_secret=module_sim.token_secret, root=tmp_path / "tf")
    spec = backend.specs[-1]
    assert spec.user_data is not None
    directory = tf.directory(spec.name)
    tf.write(directory, tf.render(spec, inherited=tf.inherited("pve1", 9001, live=False)))
    vm_secret = _vm_secret(spec.user_data)
    assert vm_secret.encode() in (directory / "main.tf.json").read_bytes()  # a live VM needs it
    archive(directory, spec.vmid)
    reconciler.reconcile(1, EXPIRES + 10 * 86400)  # expired: stopped, then destroyed
    reconciler.reconcile(1, EXPIRES + 10 * 86400)
    assert world.vm(1) is None and not files_below(module_sim.snippets_dir)

    every_file = files_below(tmp_path, module_sim.snippets_dir)
    assert log_file in every_file and (tmp_path / "tf" / ARCHIVE).is_dir()
    for path in every_file:
        assert SECRET.encode() not in path.read_bytes(), path
    for path in files_below(tmp_path / "tf" / ARCHIVE):
        assert vm_secret.encode() not in path.read_bytes(), path


class SpecRecorder(LeakyBackend):
    """LeakyBackend that also keeps the specs it was asked to create."""

    def __init__(self, inner: Any, failures: list[Exception]) -> None:
        super().__init__(inner, failures)
        self.specs: list[VMSpec] = []

    def create(self, spec: VMSpec) -> VMRef:
        self.specs.append(spec)
        return super().create(spec)


def _vm_secret(user_data: str) -> str:
    """The per-VM secret key the cloud-init template writes (``secret_key: <hex>``)."""
    found = re.search(r"secret_key\s*[:=]\s*\"?([0-9a-fA-F]{32,})", user_data)
    assert found, user_data
    return found.group(1)
