"""`blockhost vm create` checks the database header like every other command (issue 14): a
database of another deployment (same chain, other subscription contract) is refused in one
line before anything is allocated, minted or cloned; one of this deployment is used."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from web3 import Web3

from listener.chain.deployment import Deployment, bind_database
from listener.chain.journal import Store
from listener.devkit.devenv import CHAIN_ID, DevEnv
from tests.support.paths import REPO_ROOT

BIN = Path(sys.executable).parent
OTHER_CONTRACT = "0x" + "ab" * 20


def vm_create(env: DevEnv, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [str(BIN / "blockhost"), "--config", str(env.config_path), "vm", "create", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=180, cwd=REPO_ROOT)


def database_of(env: DevEnv, subscription_contract: str) -> Deployment:
    """``db.path`` made by the listener of the deployment with this subscription contract."""
    deployment = Deployment(CHAIN_ID, Web3.to_checksum_address(subscription_contract),
                            Web3.to_checksum_address(env.deployment["nft"]))
    store = Store.open(env.db_path)
    try:
        store.bind_chain(CHAIN_ID)
        bind_database(store.conn, deployment, env.db_path)
    finally:
        store.close()
    return deployment


def rows_in(env: DevEnv, table: str) -> int:
    """Rows of ``table`` (0 when nothing ever created it)."""
    tables = {row[0] for row in env.db_rows("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if table not in tables:
        return 0
    query = f"SELECT COUNT(*) FROM {table}"  # noqa: S608 - a name sqlite_master just listed
    return int(env.db_rows(query)[0][0])


def test_a_database_of_another_deployment_is_refused_in_one_line(dev_env: DevEnv) -> None:
    theirs = database_of(dev_env, OTHER_CONTRACT)
    owner = dev_env.user(1).address
    clones_before = len(dev_env.sim.state()["tasks"])
    for extra in ([], ["--apply"]):
        refused = vm_create(dev_env, "manual-1", "--owner-wallet", owner, *extra)
        assert refused.returncode == 1 and refused.stdout == "", refused.stderr
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1, refused.stderr
        assert f"belongs to deployment {theirs.id}" in lines[0]
        assert "point db.path at" in lines[0]
    assert rows_in(dev_env, "vms") == rows_in(dev_env, "tx_requests") == 0
    assert len(dev_env.sim.state()["tasks"]) == clones_before


def test_a_database_of_this_deployment_is_used(dev_env: DevEnv) -> None:
    database_of(dev_env, dev_env.deployment["subscriptions"])
    planned = vm_create(dev_env, "manual-1", "--owner-wallet", dev_env.user(1).address)
    assert planned.returncode == 0, planned.stderr
    assert json.loads(planned.stdout)["status"] == "planned"
