"""Provisioning parallelism: N paid subscriptions arriving at once, until every VM runs.

``python -m bench.provisioning [--vms 64] [--clone-seconds 3] [--json]`` starts the PVE
simulator (two nodes, clone tasks that take ``--clone-seconds``), journals N subscriptions as
if they arrived in one block (already minted: the NFT side is not measured here), and runs
the daemon's reconciler over them twice in the same run: with the default parallelism
(``proxmox.max_parallel`` workers, ``max_parallel_per_node`` creates per node) and strictly
sequentially. It reports both wall times and their ratio.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from eth_abi.abi import encode

from listener.chain.events import EVENT_TOPICS, decode_log
from listener.chain.journal import Store
from listener.config import Config, build_config
from listener.devkit.devenv import write_secret_file
from listener.reconcile.progress import Progress, ProgressStore
from listener.reconcile.reconciler import Reconciler, Services
from listener.runtime.logging_setup import configure
from listener.runtime.wiring import build_backend, pools_from_config
from provisioner.inventory import Inventory
from provisioner.placement import PlacementLimiter, PlacementLimits
from provisioner.pvesim.launcher import start_pvesim

SUBSCRIBER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
EXPIRES = 4_000_000_000


def _created(sub_id: int) -> dict[str, Any]:
    def word(value: int) -> str:
        return "0x" + value.to_bytes(32, "big").hex()

    data = encode(["uint256", "uint256", "address", "bytes"], [EXPIRES, 100, SUBSCRIBER, b""])
    return {"blockNumber": "0x10", "blockHash": "0x" + "ab" * 32,
            "transactionHash": "0x" + f"{sub_id:064x}", "logIndex": hex(sub_id),
            "address": "0x" + "11" * 20,
            "topics": [EVENT_TOPICS["SubscriptionCreated"], word(sub_id), word(1),
                       "0x" + "00" * 12 + SUBSCRIBER[2:].lower()],
            "data": "0x" + data.hex()}


def _config(workdir: Path, sim: Any, *, parallel: int, per_node: int) -> Config:
    token_file = workdir / "pve-token"
    write_secret_file(token_file, sim.token_secret)
    return build_config({
        "chain": {"chain_id": 31337, "nft_contract": "0x" + "22" * 20,
                  "rpc_urls": ["http://127.0.0.1:8545"]},
        "proxmox": {"api_url": sim.url, "token_id": sim.token_id,
                    "token_secret_file": str(token_file), "verify_ssl": str(sim.ca_path),
                    "template_vmid": 9001, "pool": "blockhost", "snippets_dir": None,
                    "max_parallel": parallel, "max_parallel_per_node": per_node},
        "network": {"ip_pool": {"network": "10.8.0.0/16", "start": 10, "end": 4000,
                                "gateway": "10.8.0.1"},
                    "vmid_range": {"start": 200000, "end": 209999}},
        "db": {"path": str(workdir / "blockhost.db")},
    }, origin="bench")


def run_once(workdir: Path, vms: int, clone_seconds: float, *, parallel: int,
             per_node: int) -> float:
    """Seconds from 'N subscriptions journaled' to 'N VMs running'."""
    workdir.mkdir(parents=True)
    sim = start_pvesim(workdir / "pvesim", nodes=("pve1", "pve2"), template_vmid=9001,
                       clone_seconds=clone_seconds, task_seconds=0.05)
    try:
        config = _config(workdir, sim, parallel=parallel, per_node=per_node)
        store = Store.open(config.db.path)
        store.journal_batch([decode_log(_created(i)) for i in range(1, vms + 1)], to_block=16,
                            to_hash="0x" + "ab" * 32, to_timestamp=1, block_times={})
        progress = ProgressStore(store.conn)
        for sub_id in range(1, vms + 1):
            progress.save(sub_id, Progress(), Progress(token_id=sub_id, nft_expires_at=EXPIRES))
        store.close()
        limiter = PlacementLimiter(PlacementLimits(per_node=per_node, total=parallel))

        def work(sub_id: int) -> None:
            store = Store.open(config.db.path)
            services = Services(config=config, store=store, inventory=Inventory(store.conn),
                                backend=build_backend(config), minter=None, server_key=None,
                                pools=pools_from_config(config))
            # alternate nodes, as placement by free memory does on two equal nodes
            node = "pve1" if sub_id % 2 else "pve2"
            reconciler = Reconciler(services, choose_node=lambda _size: node, limiter=limiter)
            try:
                for _ in range(50):  # a deferred create (full node) is simply tried again
                    reconciler.reconcile(sub_id, EXPIRES - 10)
                    record = services.inventory.live_for_subscription(sub_id)
                    if record is not None and record.state == "running":
                        return
                    time.sleep(0.05)
                raise RuntimeError(f"subscription {sub_id} did not converge")
            finally:
                store.close()

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            list(pool.map(work, range(1, vms + 1)))
        elapsed = time.monotonic() - started
        running = [v for v in sim.state()["vms"] if v.get("pool") == "blockhost"
                   and v["status"] == "running"]
        if len(running) != vms:
            raise RuntimeError(f"expected {vms} running VMs, the simulator has {len(running)}")
        return elapsed
    finally:
        sim.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.provisioning", description=__doc__)
    parser.add_argument("--vms", type=int, default=64)
    parser.add_argument("--clone-seconds", type=float, default=3.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    configure(level=logging.WARNING)  # per-step logs would dominate the output
    defaults = build_config({}).proxmox
    with tempfile.TemporaryDirectory(prefix="bench-prov-") as tmp:
        parallel = run_once(Path(tmp) / "parallel", args.vms, args.clone_seconds,
                            parallel=defaults.max_parallel,
                            per_node=defaults.max_parallel_per_node)
        sequential = run_once(Path(tmp) / "sequential", args.vms, args.clone_seconds,
                              parallel=1, per_node=1)
    result = {"vms": args.vms, "clone_seconds": args.clone_seconds,
              "max_parallel": defaults.max_parallel,
              "max_parallel_per_node": defaults.max_parallel_per_node,
              "parallel_seconds": round(parallel, 1), "sequential_seconds": round(sequential, 1),
              "speedup": round(sequential / parallel, 1)}
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(f"{args.vms} VMs, clone {args.clone_seconds}s: default parallelism "
              f"({defaults.max_parallel} total, {defaults.max_parallel_per_node} per node) "
              f"{parallel:.1f}s, sequential {sequential:.1f}s, "
              f"speedup {sequential / parallel:.1f}x",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
