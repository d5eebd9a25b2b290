"""A reconciler wired to a real PVE simulator and an on-disk database, with subscriptions
journaled as already minted: every step exercised is a Proxmox step through the real backend
and inventory. Shared by the reconcile tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from listener.chain.events import EVENT_TOPICS, decode_log
from listener.chain.journal import Store
from listener.config import build_config
from listener.devkit.devenv import write_secret_file
from listener.reconcile.progress import Progress, ProgressStore
from listener.reconcile.reconciler import Reconciler, Services
from listener.runtime.wiring import pools_from_config
from provisioner.inventory import Inventory
from provisioner.proxmox.backend import ProxmoxAPIBackend

EXPIRES = 2_000_000_000
GRACE_DAYS = 1
SUBSCRIBER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def created_log(sub_id: int, expires_at: int = EXPIRES) -> dict[str, Any]:
    """A SubscriptionCreated log as eth_getLogs returns it."""
    from eth_abi import encode

    def word(value: int) -> str:
        return "0x" + value.to_bytes(32, "big").hex()

    data = encode(["uint256", "uint256", "address", "bytes"], [expires_at, 100, SUBSCRIBER, b""])
    return {
        "blockNumber": hex(10 + sub_id), "blockHash": "0x" + f"{sub_id:064x}",
        "transactionHash": "0x" + f"{sub_id + 1000:064x}", "logIndex": "0x0",
        "address": "0x" + "11" * 20,
        "topics": [EVENT_TOPICS["SubscriptionCreated"], word(sub_id), word(1),
                   "0x" + "00" * 12 + SUBSCRIBER[2:].lower()],
        "data": "0x" + data.hex(),
    }


class World:
    def __init__(self, tmp_path: Path, sim: Any, hooks: dict[str, Any] | None = None) -> None:
        self.sim = sim
        token_file = tmp_path / "pve-token"
        write_secret_file(token_file, sim.token_secret)
        self.config = build_config({
            "chain": {"chain_id": 31337, "nft_contract": "0x" + "22" * 20,
                      "rpc_urls": ["http://127.0.0.1:8545"]},
            "proxmox": {"api_url": sim.url, "token_id": sim.token_id,
                        "token_secret_file": str(token_file), "verify_ssl": str(sim.ca_path),
                        "template_vmid": 9001, "pool": "blockhost", "snippets_dir": None},
            "network": {"ip_pool": {"network": "10.9.0.0/24", "start": 10, "end": 20,
                                    "gateway": "10.9.0.1"},
                        "vmid_range": {"start": 100000, "end": 100009},
                        "hooks": hooks or {}},
            "gc": {"grace_days": GRACE_DAYS},
            "db": {"path": str(tmp_path / "blockhost.db")},
        }, origin="test")
        self.store = Store.open(self.config.db.path)
        self.inventory = Inventory(self.store.conn)
        backend = ProxmoxAPIBackend(sim.url, sim.token_id, sim.token_secret,
                                    verify=str(sim.ca_path), pool="blockhost", tag="blockhost")
        self.services = Services(config=self.config, store=self.store, inventory=self.inventory,
                                 backend=backend, minter=None, server_key=None,
                                 pools=pools_from_config(self.config))
        self.reconciler = Reconciler(self.services, choose_node=lambda _size: "pve1")
        self.progress = ProgressStore(self.store.conn)

    def paid(self, sub_id: int, expires_at: int = EXPIRES) -> None:
        self.store.journal_batch([decode_log(created_log(sub_id, expires_at))],
                                 to_block=100 + sub_id, to_hash="0x" + "ab" * 32,
                                 to_timestamp=1, block_times={})
        self.progress.save(sub_id, Progress(),
                           Progress(token_id=sub_id, nft_expires_at=expires_at))

    def reconcile(self, sub_id: int, chain_time: int = EXPIRES - 100) -> str | None:
        return self.reconciler.reconcile(sub_id, chain_time)

    def vm(self, sub_id: int) -> Any:
        return self.inventory.live_for_subscription(sub_id)
