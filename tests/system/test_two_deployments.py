"""Two deployments on one Proxmox: two contract sets on one anvil, two databases, two real
daemons, one simulator, and the defaults they share (tag, pool, name prefix, VMID range,
subnet). Each serves its own subscription #1 as ``blockhost-001``; neither lists, adopts,
stops or destroys the other's VM, nor hands out its VMID or address; a database pointed at
the other contract is refused; old-marker VMs become ours only through `markers migrate`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from listener.chain.contracts import deploy_all
from listener.chain.deployment import deployment_id
from listener.chain.journal import Store
from listener.devkit.devchain import DEV_PRIVATE_KEYS
from listener.devkit.devenv import (
    CHAIN_ID,
    DevEnv,
    sim_vm,
    start_dev_env,
    status_of,
    subscription_of,
    write_secret_file,
)
from listener.userkit.subscriber import subscribe
from provisioner.backend import marker_for, parse_marker
from tests.support.cli import run_blockhost

pytestmark = pytest.mark.slow

DAY = 86400
B_SIGNER = 3  # its own signer (not a buyer here): two daemons never share nonces


@dataclass
class Side:
    """One deployment's handles: its config, database and listener."""

    config_path: Path
    db_path: Path
    contracts: dict[str, Any]
    log: Path

    @property
    def id(self) -> str:
        return deployment_id(CHAIN_ID, self.contracts["subscriptions"], self.contracts["nft"])

    def status(self) -> dict[str, Any]:
        return status_of(self.config_path, self.db_path)

    def subscription(self, sub_id: int) -> dict[str, Any] | None:
        return subscription_of(self.config_path, self.db_path, sub_id)


def second_config(env: DevEnv, workdir: Path, contracts: dict[str, Any], *,
                  db_path: Path) -> Path:
    """Deployment B: A's config with B's contracts, signer and database; everything Proxmox
    (tag, pool, prefix, VMID range, subnet, snippet storage) left as A has it."""
    workdir.mkdir(parents=True, exist_ok=True)
    doc = yaml.safe_load(env.config_path.read_text())
    doc["chain"].update(subscription_contract=contracts["subscriptions"],
                        nft_contract=contracts["nft"])
    key = workdir / "deployer.key"
    if not key.exists():
        write_secret_file(key, DEV_PRIVATE_KEYS[B_SIGNER].removeprefix("0x"))
    doc["signer"]["private_key_file"] = str(key)
    doc["db"]["path"] = str(db_path)
    path = workdir / f"{db_path.stem}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def start_listener(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "listener.cli", "--config", str(config), "listen"],
            stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[DevEnv]:
    environment = start_dev_env(tmp_path / "env", confirmations=2, grace_days=0.5,
                                clone_seconds=0.1)
    try:
        yield environment
    finally:
        environment.close()


def buy(env: DevEnv, side: Side, user: int, days: int) -> int:
    env.fund(env.user(user))
    return subscribe(env.w3, env.user(user), subscription_contract=side.contracts["subscriptions"],
                     server_public_key=env.server_public_key, plan_id=1,
                     days=days).subscription_id


def wait_state(env: DevEnv, side: Side, sub_id: int, state: str,
               listeners: list[subprocess.Popen[bytes]]) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        for process in listeners:
            assert process.poll() is None, f"a listener exited: see {side.log}"
        sub = side.subscription(sub_id)
        return sub if sub is not None and sub["state"] == state else None
    found: dict[str, Any] = env.wait_for(f"subscription #{sub_id} {state}", check, timeout=120)
    return found


def first_line(vm: dict[str, Any]) -> str:
    return str(vm["description"]).split("\n", 1)[0]


def test_two_deployments_share_one_proxmox_and_keep_apart(env: DevEnv, tmp_path: Path) -> None:
    contracts_b = deploy_all(env.w3, DEV_PRIVATE_KEYS[B_SIGNER],
                             stablecoin=env.deployment["stablecoin"]).to_dict()
    a = Side(env.config_path, env.db_path, env.deployment, env.listener_log)
    b_dir = tmp_path / "b"
    b = Side(second_config(env, b_dir, contracts_b, db_path=b_dir / "blockhost.db"),
             b_dir / "blockhost.db", contracts_b, b_dir / "listener.log")
    assert a.id != b.id
    listeners = [env.start_listener(), start_listener(b.config_path, b.log)]
    env.listeners.append(listeners[1])

    sub_a = buy(env, a, user=1, days=1)
    vm_a = wait_state(env, a, sub_a, "active", listeners)["vm"]
    sub_b = buy(env, b, user=2, days=5)
    vm_b = wait_state(env, b, sub_b, "active", listeners)["vm"]

    # both serve their subscription #1 as blockhost-001, on different VMIDs and addresses
    assert sub_a == sub_b == 1 and vm_a["name"] == vm_b["name"] == "blockhost-001"
    assert vm_a["vmid"] != vm_b["vmid"] and vm_a["ip"] != vm_b["ip"]
    on_a, on_b = sim_vm(env.sim, vm_a["vmid"]), sim_vm(env.sim, vm_b["vmid"])
    assert on_a is not None and on_b is not None
    assert first_line(on_a) == marker_for(1, "blockhost-001", deployment=a.id)
    assert first_line(on_b) == marker_for(1, "blockhost-001", deployment=b.id)
    assert f"blockhost-{a.id}" in on_a["tags"] and f"blockhost-{b.id}" in on_b["tags"]
    assert f"blockhost-{b.id}" not in on_a["tags"]
    assert a.status()["chain"]["deployment"] == a.id
    assert b.status()["chain"]["deployment"] == b.id
    snippets = env.workdir / "snippets" / "snippets"
    b_snippet = snippets / f"blockhost-001-{b.id}-user.yaml"
    b_user_data = b_snippet.read_bytes()

    # A's subscription runs out and is collected; B's VM, of the same name, is left alone
    env.advance_time(2 * DAY)
    wait_state(env, a, sub_a, "destroyed", listeners)
    assert sim_vm(env.sim, vm_a["vmid"]) is None
    still = sim_vm(env.sim, vm_b["vmid"])
    assert still is not None and still["status"] == "running"
    assert still["smbios_uuid"] == on_b["smbios_uuid"] and first_line(still) == first_line(on_b)
    assert b_snippet.read_bytes() == b_user_data
    assert (b.subscription(sub_b) or {})["state"] == "active"
    for process in listeners:
        process.terminate()
        assert process.wait(timeout=30) == 0

    # B's config on A's database: refused in one line naming both ids (exit 1)
    wrong = second_config(env, b_dir, contracts_b, db_path=a.db_path)
    for command in (("listen",), ("markers", "migrate", "--dry-run")):
        result = run_blockhost(wrong, *command)
        assert result.returncode == 1, (command, result.stderr[-2000:])
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("blockhost: error: database"), lines
        assert a.id in lines[0] and b.id in lines[0] and "db.path" in lines[0]


def test_markers_migrate_adopts_only_what_our_inventory_knows(dev_env: DevEnv) -> None:
    env = dev_env
    contracts = env.deployment
    ours = deployment_id(CHAIN_ID, contracts["subscriptions"], contracts["nft"])
    listener = env.start_listener()
    env.fund(env.user(1))
    sub_id = subscribe(env.w3, env.user(1), subscription_contract=contracts["subscriptions"],
                       server_public_key=env.server_public_key, plan_id=1,
                       days=5).subscription_id
    vm = env.wait_for("the VM", lambda: ((env.subscription(sub_id) or {}).get("state") == "active"
                                         and env.subscription(sub_id)), listener=listener)["vm"]
    listener.terminate()
    assert listener.wait(timeout=30) == 0
    # what a VM made before deployment ids looks like, plus one the inventory never knew
    old = marker_for(sub_id, vm["name"])
    made = sim_vm(env.sim, vm["vmid"])
    assert made is not None
    assert f"blockhost-{ours}" in made["tags"]
    env.sim.update_vm(vm["vmid"], config={
        "description": old + "\nnotes kept",
        "tags": ";".join(t for t in made["tags"] if t != f"blockhost-{ours}")})
    env.sim.create_vm(vmid=100400, name="blockhost-077", pool="blockhost", tags="blockhost;sub-77",
                      description=marker_for(77, "blockhost-077"))

    def migrate(*flags: str) -> dict[int, dict[str, Any]]:
        result = run_blockhost(env.config_path, "markers", "migrate", "--json", *flags)
        assert result.returncode == 0, result.stderr[-2000:]
        doc = json.loads(result.stdout)
        assert doc["deployment"] == ours
        return {entry["vmid"]: entry for entry in doc["vms"]}

    dry = migrate("--dry-run")
    assert dry[vm["vmid"]]["action"] == "would migrate"
    assert dry[100400]["action"] == "skipped" and "not in our inventory" in dry[100400]["reason"]
    assert (sim_vm(env.sim, vm["vmid"]) or {})["description"] == old + "\nnotes kept"

    done = migrate()
    assert done[vm["vmid"]]["action"] == "migrated" and done[100400]["action"] == "skipped"
    after = sim_vm(env.sim, vm["vmid"])
    assert after is not None
    assert after["description"] == marker_for(sub_id, vm["name"], deployment=ours) + "\nnotes kept"
    assert sorted(after["tags"]) == sorted(made["tags"])
    foreign = sim_vm(env.sim, 100400)
    assert foreign is not None
    foreign_marker = parse_marker(foreign["description"])
    assert foreign_marker is not None and foreign_marker.deployment is None

    again = migrate()
    assert again[vm["vmid"]]["action"] == "already ours"
    assert (sim_vm(env.sim, vm["vmid"]) or {})["description"] == after["description"]
    text = run_blockhost(env.config_path, "markers", "migrate")
    assert text.returncode == 0 and f"deployment {ours}: added the id to 0 VM(s)" in text.stdout


def test_database_header_is_written_once_and_guards_the_database(tmp_path: Path) -> None:
    """The header (no chain, no simulator needed): written by the first bind, the same
    deployment binds again, another is refused naming both ids; a pre-upgrade database whose
    journal holds another contract's events never gets this deployment's header."""
    from listener.chain.deployment import Deployment, bind_database, recorded
    from listener.errors import UserError

    subs, nft, other = ("0x" + c * 40 for c in "abc")
    ours = Deployment(CHAIN_ID, subs, nft)
    theirs = Deployment(CHAIN_ID, other, nft)
    store = Store.open(tmp_path / "a.db")
    assert store.deployment_id() is None
    bind_database(store.conn, ours, "a.db")
    bind_database(store.conn, ours, "a.db")
    assert store.deployment_id() == ours.id and recorded(store.conn) == ours
    with pytest.raises(UserError, match=f"belongs to deployment {ours.id}.*deployment {theirs.id}"):
        bind_database(store.conn, theirs, "a.db")
    assert store.deployment_id() == ours.id

    old = Store.open(tmp_path / "old.db")
    old.conn.execute("INSERT INTO events (block_number, block_hash, tx_hash, log_index, address,"
                     " name, args) VALUES (1, '0x1', '0x2', 0, ?, 'SubscriptionCreated', '{}')",
                     (subs,))
    with pytest.raises(UserError, match=f"journaled events of contract {subs}"):
        bind_database(old.conn, theirs, "old.db")
    assert old.deployment_id() is None
    bind_database(old.conn, ours, "old.db")
    assert old.deployment_id() == ours.id
