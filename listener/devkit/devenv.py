"""A complete local environment: anvil, the PVE simulator, deployed contracts, keys, config.

Used by ``blockhost demo`` and by the integration tests, so both exercise exactly the
same set-up. Every process started here is registered on an ExitStack and stopped again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.types import RPCEndpoint

from listener.chain.contracts import deploy_all, load_artifact, send_transaction
from listener.chain.journal import Store
from listener.config import load_config
from listener.crypto.key_files import generate_key_file, public_key_hex
from listener.devkit.devchain import DEV_PRIVATE_KEYS, FAUCET_PRIVATE_KEY, Anvil, start_anvil
from listener.errors import UserError
from listener.ops.status import snapshot
from provisioner.inventory import Inventory

CHAIN_ID = 31337


def write_secret_file(path: Path, text: str) -> None:
    """Create a file readable only by its owner (0600 from the first byte)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(text + "\n")


@dataclass
class DevEnv:
    """Handles to everything a local run needs."""

    workdir: Path
    anvil: Anvil
    sim: Any
    w3: Web3
    deployment: dict[str, Any]
    server_public_key: bytes
    config_path: Path
    stack: ExitStack
    listeners: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def db_path(self) -> Path:
        return self.workdir / "blockhost.db"

    @property
    def listener_log(self) -> Path:
        return self.workdir / "listener.log"

    def user(self, index: int = 1) -> LocalAccount:
        """A funded dev account (index 0 is the operator)."""
        account: LocalAccount = Account.from_key(DEV_PRIVATE_KEYS[index])
        return account

    def fund(self, account: LocalAccount, amount: int = 1_000 * 10**6) -> None:
        coin = self.w3.eth.contract(address=self.deployment["stablecoin"],
                                    abi=load_artifact("MockStablecoin")["abi"])
        faucet: LocalAccount = Account.from_key(FAUCET_PRIVATE_KEY)  # not the listener's signer
        send_transaction(self.w3, faucet, coin.functions.mint(account.address, amount))

    def start_listener(self) -> subprocess.Popen[bytes]:
        """Run the real daemon as its own process, logging to ``listener.log``."""
        with open(self.listener_log, "ab") as handle:
            process = subprocess.Popen(
                [sys.executable, "-m", "listener.cli", "--config", str(self.config_path), "listen"],
                stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.listeners.append(process)
        return process

    def observability_url(self) -> str | None:
        """http://HOST:PORT of the newest listener's /healthz, /readyz, /metrics (from its log)."""
        if not self.listener_log.exists():
            return None
        found = None
        for line in self.listener_log.read_text(errors="replace").splitlines():
            if "observability.listening" in line:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                found = f"http://{entry['host']}:{entry['port']}"
        return found

    def kill_listener(self, process: subprocess.Popen[bytes]) -> None:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def mine(self, blocks: int = 1) -> None:
        self.w3.provider.make_request(RPCEndpoint("anvil_mine"), [hex(blocks)])

    def advance_time(self, seconds: int) -> None:
        self.w3.provider.make_request(RPCEndpoint("evm_increaseTime"), [seconds])
        self.mine()

    def status(self) -> dict[str, Any]:
        return status_of(self.config_path, self.db_path)

    def subscription(self, subscription_id: int) -> dict[str, Any] | None:
        return subscription_of(self.config_path, self.db_path, subscription_id)

    def db_rows(self, query: str) -> list[tuple[Any, ...]]:
        """Read-only query against the listener's database (for tests and the demo)."""
        store = Store.open(self.db_path)
        try:
            return [tuple(row) for row in store.conn.execute(query)]
        finally:
            store.close()

    def wait_for(self, what: str, check: Callable[[], Any], *, timeout: float = 60.0,
                 listener: subprocess.Popen[bytes] | None = None) -> Any:
        """Mine a block per poll (so confirmations advance) until ``check`` is truthy."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if listener is not None and listener.poll() is not None:
                tail = self.listener_log.read_text(errors="replace").strip().splitlines()[-3:]
                raise UserError(f"the listener exited with code {listener.returncode}; last log "
                                f"lines: {' | '.join(tail)}")
            value = check()
            if value:
                return value
            self.mine()
            time.sleep(0.25)
        raise UserError(f"timed out after {timeout:.0f}s waiting for {what}; see "
                        f"{self.listener_log}")

    def close(self) -> None:
        for process in self.listeners:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.stack.close()


def config_document(workdir: Path, *, rpc_url: str, deployment: dict[str, Any], sim: Any,
                    confirmations: int, grace_days: float) -> dict[str, Any]:
    return {
        "chain": {
            "rpc_urls": [rpc_url],
            "chain_id": CHAIN_ID,
            "subscription_contract": deployment["subscriptions"],
            "nft_contract": deployment["nft"],
            "start_block": 0,
            "confirmations": confirmations,
            "poll_interval": 0.3,
        },
        "signer": {"private_key_file": str(workdir / "deployer.key")},
        "server_key_file": str(workdir / "server.key"),
        "nft": {"description": "Blockhost demo access credential"},
        "proxmox": {
            "api_url": sim.url,
            "token_id": sim.token_id,
            "token_secret_file": str(workdir / "pve-token"),
            "verify_ssl": str(sim.ca_path),
            "template_vmid": 9001,
            "pool": "blockhost",
            "snippets_dir": str(workdir / "snippets"),
            "cloudinit_storage": "local",
            "max_parallel": 4,
        },
        "network": {
            "ip_pool": {"network": "10.77.0.0/24", "start": 10, "end": 200,
                        "gateway": "10.77.0.1"},
            "vmid_range": {"start": 100000, "end": 100499},
        },
        # the dev chain is loopback and keyless, so tenants may use it as their public RPC
        "vm": {"rpc_url": rpc_url},
        "gc": {"grace_days": grace_days},
        "db": {"path": str(workdir / "blockhost.db")},
        "metrics": {"listen": "127.0.0.1:0"},  # the bound port is in the listener's log
    }


def start_dev_env(workdir: Path, *, confirmations: int = 2, grace_days: float = 1,
                  clone_seconds: float = 1.0,
                  on_step: Callable[[str], None] | None = None) -> DevEnv:
    """Start chain + simulator, write keys, deploy, fund nobody yet, write the config."""
    from provisioner.pvesim.launcher import start_pvesim

    say = on_step or (lambda _text: None)
    workdir.mkdir(parents=True, exist_ok=True)
    stack = ExitStack()
    try:
        anvil = start_anvil(workdir / "anvil")
        stack.callback(anvil.stop)
        say(f"anvil chain running at {anvil.url} (chain id {CHAIN_ID})")
        (workdir / "snippets" / "snippets").mkdir(parents=True, exist_ok=True)
        sim = start_pvesim(workdir / "pvesim", nodes=("pve1", "pve2"), template_vmid=9001,
                           clone_seconds=clone_seconds, snippets_dir=workdir / "snippets")
        stack.callback(sim.stop)
        say(f"PVE simulator running at {sim.url} (nodes pve1, pve2; template 9001; its own CA)")

        write_secret_file(workdir / "deployer.key", DEV_PRIVATE_KEYS[0].removeprefix("0x"))
        write_secret_file(workdir / "pve-token", sim.token_secret)
        server_key = generate_key_file(workdir / "server.key")
        server_pub = public_key_hex(server_key)
        say(f"server key generated (mode 0600); public key {server_pub[:20]}…")

        w3 = Web3(Web3.HTTPProvider(anvil.url, request_kwargs={"timeout": 30}))
        deployment = deploy_all(w3, DEV_PRIVATE_KEYS[0]).to_dict()
        say(f"contracts deployed: subscriptions {deployment['subscriptions']}, "
            f"NFT {deployment['nft']}, mock USDC {deployment['stablecoin']}")

        config_path = workdir / "blockhost.yaml"
        config_path.write_text(yaml.safe_dump(config_document(
            workdir, rpc_url=anvil.url, deployment=deployment, sim=sim,
            confirmations=confirmations, grace_days=grace_days)))
        return DevEnv(workdir=workdir, anvil=anvil, sim=sim, w3=w3, deployment=deployment,
                      server_public_key=bytes.fromhex(server_pub[2:]), config_path=config_path,
                      stack=stack)
    except BaseException:
        stack.close()
        raise


def sim_vm(sim: Any, vmid: int) -> dict[str, Any] | None:
    """The simulator's record of one VM, or None if it does not exist."""
    vms = sim.state().get("vms", {})
    if isinstance(vms, dict):
        return cast(dict[str, Any] | None, vms.get(str(vmid)))
    for entry in vms:
        if int(entry.get("vmid", -1)) == vmid:
            return cast(dict[str, Any], entry)
    return None


def status_of(config_path: Path, db_path: Path) -> dict[str, Any]:
    """`blockhost status --json` of one deployment, read in-process (for tests and the demo)."""
    config = load_config(config_path, environ={}, broker_allocation=None)
    store = Store.open(db_path)
    try:
        return snapshot(config, store, Inventory(store.conn))
    finally:
        store.close()


def subscription_of(config_path: Path, db_path: Path,
                    subscription_id: int) -> dict[str, Any] | None:
    """One subscription's row of `status_of`, or None before the database exists."""
    if not db_path.exists():
        return None
    for sub in status_of(config_path, db_path)["subscriptions"]:
        if sub["id"] == subscription_id:
            return cast(dict[str, Any], sub)
    return None
