"""The listener daemon: follow the chain, then hand subscriptions to a bounded worker pool.

The chain loop never waits for Proxmox or for a mint: reconciliation of each subscription
runs in a worker thread (at most ``proxmox.max_parallel`` at once, one at a time per
subscription), with its own SQLite connection and HTTP sessions.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import structlog

from listener.config import Config
from listener.decide import next_action
from listener.reconciler import (
    Reconciler,
    Services,
    due,
    facts_of,
    observe,
    subscription_state,
)
from listener.rpc import RpcClient
from listener.scanner import Outcome, scan_once
from listener.store import Store
from provisioner.inventory import Inventory

log = structlog.get_logger(__name__)


def sd_notify(message: str) -> None:
    """Tell systemd about readiness / liveness (no-op outside a Type=notify unit)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(address)
            sock.sendall(message.encode())
        except OSError:
            log.warning("systemd.notify_failed")


def choose_node_by_memory(services: Services) -> str:
    """Placement: the allowed online node with the most free memory."""
    free = services.backend.free_memory_by_node()
    allowed = services.config.proxmox.nodes
    candidates = {node: mem for node, mem in free.items() if not allowed or node in allowed}
    if not candidates:
        from listener.errors import UserError

        raise UserError("no online Proxmox node matches proxmox.nodes; check the list")
    return max(sorted(candidates), key=lambda node: candidates[node])


class Daemon:
    """Owns the chain loop, the worker pool and shutdown."""

    def __init__(self, config: Config, *,
                 services_factory: Callable[[Config], Services] | None = None) -> None:
        from listener.wiring import build_services

        self.config = config
        self.chain_id: int | None = config.chain.chain_id
        # The chain id the RPC reports (set in run()) reaches the cloud-init CHAIN_ID variable.
        self._factory = services_factory or (
            lambda cfg: build_services(cfg, chain_id=self.chain_id))
        self.stop_event = threading.Event()
        self._local = threading.local()
        self._inflight: dict[int, Future[None]] = {}
        self._last_try: dict[int, float] = {}

    # -- workers -------------------------------------------------------------------------

    def _services(self) -> Services:
        services = getattr(self._local, "services", None)
        if services is None:
            services = self._factory(self.config)
            self._local.services = services
        return services

    def _work(self, subscription_id: int, chain_time: int) -> None:
        services = self._services()
        reconciler = Reconciler(services, choose_node=lambda: choose_node_by_memory(services))
        try:
            reconciler.reconcile(subscription_id, chain_time)
        except Exception:  # noqa: BLE001 - a worker must never die silently
            log.exception("reconcile.crashed", subscription=subscription_id)

    def dispatch(self, pool: ThreadPoolExecutor, store: Store, inventory: Inventory) -> int:
        """Submit every subscription that has a step to take and is not in flight."""
        for sub_id, future in list(self._inflight.items()):
            if future.done():
                del self._inflight[sub_id]
        chain_time = store.chain_state().chain_time
        if chain_time is None:
            return 0
        submitted = 0
        now = time.monotonic()
        for sub in store.subscriptions():
            if sub.id in self._inflight or not due(sub, now, self._last_try):
                continue
            observed, _ = observe(sub, inventory)
            grace = self.config.grace_seconds
            if (next_action(facts_of(sub), chain_time, grace, observed) is None
                    and not sub.last_error
                    and subscription_state(sub, inventory, chain_time, grace) == sub.state):
                continue
            self._last_try[sub.id] = now
            self._inflight[sub.id] = pool.submit(self._work, sub.id, chain_time)
            submitted += 1
        return submitted

    # -- main loop -----------------------------------------------------------------------

    def run(self) -> int:
        cfg = self.config
        rpc = RpcClient(cfg.chain.rpc_urls, expected_chain_id=cfg.chain.chain_id)
        store = Store.open(cfg.db.path)
        inventory = Inventory(store.conn)
        self.chain_id = rpc.chain_id()
        store.bind_chain(self.chain_id)
        self._services()  # fail fast on bad keys / backend config, before "ready"
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stop_event.set())
        log.info("daemon.started", cursor=store.chain_state().cursor,
                 start_block=cfg.chain.start_block, confirmations=cfg.chain.confirmations)
        sd_notify("READY=1")
        with ThreadPoolExecutor(max_workers=cfg.proxmox.max_parallel,
                                thread_name_prefix="reconcile") as pool:
            while not self.stop_event.is_set():
                try:
                    result = scan_once(rpc, store, cfg.chain)
                except Exception as exc:  # noqa: BLE001 - keep following; health shows it
                    log.warning("chain.scan_failed", error=f"{type(exc).__name__}: {exc}"[:300])
                    self.stop_event.wait(cfg.chain.poll_interval)
                    continue
                if result.outcome is not Outcome.HALTED:
                    self.dispatch(pool, store, inventory)
                sd_notify("WATCHDOG=1")
                if result.outcome is Outcome.REORGED or (
                        result.outcome is Outcome.PROGRESSED and not result.caught_up):
                    continue
                self.stop_event.wait(cfg.chain.poll_interval)
            log.info("daemon.stopping", inflight=len(self._inflight))
        store.close()
        return 0
