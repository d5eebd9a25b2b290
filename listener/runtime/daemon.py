"""The listener daemon: follow the chain, then hand subscriptions to a bounded worker pool.

The chain loop never waits for Proxmox or for a mint: reconciliation of each subscription
runs in a worker thread (at most ``proxmox.max_parallel`` at once, one at a time per
subscription), with its own SQLite connection and HTTP sessions.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial

import structlog

from listener.chain.heads import HeadWatcher
from listener.chain.journal import Store
from listener.chain.prefetch import LogPrefetcher
from listener.chain.ranges import RangeController
from listener.chain.rpc import RpcClient
from listener.chain.scanner import Outcome, ScanResult, scan_once
from listener.config import Config
from listener.reconcile.dead_letters import DeadLetters, is_blocked
from listener.reconcile.decide import Scope, chain_scope, next_action
from listener.reconcile.observe import BUILT_STATES, facts_of, observe, subscription_state
from listener.reconcile.placement import place
from listener.reconcile.progress import Progress, ProgressStore
from listener.reconcile.reconciler import Reconciler, Services, due
from listener.reconcile.recovery import repair_at_start
from listener.reconcile.unserved import date_purchases, undated_unserved_purchases
from listener.runtime import liveness
from listener.runtime.instance_lock import InstanceLock
from listener.runtime.observability import HealthState, Metrics, serve
from listener.runtime.start_gate import StartGate, StartInterrupted, StartStep, interruptible
from listener.writeback.tx_store import TxStore
from provisioner.inventory import Inventory
from provisioner.placement import PlacementLimiter, PlacementLimits
from provisioner.storage.wal_checkpoint import WalCheckpointer

log = structlog.get_logger(__name__)

#: How often stored transactions are re-driven outside of any subscription's worker.
TX_RESUME_INTERVAL = 30.0
#: How often never-served purchases are dated: its query reads the events table, so it stays
#: off the per-step path (a catch-up runs steps back to back).
UNSERVED_DATING_INTERVAL = 10.0


def _quantity(value: object) -> int:
    """A JSON-RPC quantity ("0x..." or a number) as an int."""
    return int(value, 16) if isinstance(value, str) else int(str(value))


class Daemon:
    """Owns the chain loop, the worker pool and shutdown."""

    def __init__(self, config: Config, *,
                 services_factory: Callable[[Config], Services] | None = None,
                 start_checks: Sequence[Callable[[int | None], None]] = ()) -> None:
        from listener.runtime.wiring import build_services

        self.config = config
        #: checks that need Proxmox, run in the start gate (given the chain id) before the
        #: repair: one the pre-start check skipped for an outage is not skipped for good
        self.start_checks = tuple(start_checks)
        self.chain_id: int | None = config.chain.chain_id
        # The chain id the RPC reports (set in run()) reaches the cloud-init CHAIN_ID variable.
        self._factory = services_factory or (
            lambda cfg: build_services(cfg, chain_id=self.chain_id))
        self.stop_event = threading.Event()
        self._local = threading.local()
        self._inflight: dict[int, Future[bool]] = {}
        self._last_try: dict[int, float] = {}
        #: consecutive passes that ended waiting on the chain, per subscription (backoff)
        self._waits: dict[int, int] = {}
        self._next_drift_check = 0.0
        self.metrics = Metrics()
        # two replies in flight: the one being journaled and the prefetched next one
        self.ranges = RangeController.for_listener(config.chain.max_block_range, in_flight=2)
        px = config.proxmox
        self.limiter = PlacementLimiter(
            PlacementLimits(per_node=px.max_parallel_per_node, total=px.max_parallel),
            allowed=px.nodes)
        self.health = HealthState(stale_after=max(60.0, 20 * config.chain.poll_interval))
        #: Websocket newHeads wake-ups (chain.ws_url); None = poll only.
        self.heads: HeadWatcher | None = None
        #: Fetches the next confirmed range during a catch-up step (set up in run()).
        self.prefetch: LogPrefetcher | None = None

    def stop(self) -> None:
        """Ask the loop to finish (signal handlers, tests); wakes an idle wait at once."""
        self.stop_event.set()
        if self.heads is not None:
            self.heads.interrupt()

    def _idle(self) -> None:
        """Wait for the next scan: ``poll_interval``, cut short by a websocket head.

        A head only wakes the loop; the scan that follows still reads every block from the
        cursor with eth_getLogs, so missed or out-of-order heads lose nothing."""
        wait = self.stop_event.wait if self.heads is None else self.heads.wait_for_head
        liveness.pause(wait, self.config.chain.poll_interval, stop=self.stop_event)

    def _start_heads(self) -> None:
        ws_url = self.config.chain.ws_url
        if not ws_url:
            return
        self.metrics.ws_connected.set(0)
        self.heads = HeadWatcher(ws_url, self.chain_id, stop_event=self.stop_event,
                                 on_connected=lambda up: self.metrics.ws_connected.set(int(up)))
        self.heads.start()

    # -- workers -------------------------------------------------------------------------

    def _services(self) -> Services:
        services = getattr(self._local, "services", None)
        if services is None:
            services = self._factory(self.config)
            services.step_observer = self.metrics.observe_step
            self._local.services = services
        return services

    def _work(self, subscription_id: int, chain_time: int, scope: Scope) -> bool:
        """One pass for one subscription; True when it ended waiting on the chain."""
        services = self._services()
        reconciler = Reconciler(services, choose_node=lambda size: place(services, size),
                                limiter=self.limiter)
        try:
            reconciler.reconcile(subscription_id, chain_time, scope)
        except Exception:
            log.exception("reconcile.crashed", subscription=subscription_id)
        return reconciler.waiting

    def dispatch(self, pool: ThreadPoolExecutor, store: Store, inventory: Inventory) -> int:
        """Submit every subscription that has a step to take and is not in flight.

        Every ``proxmox.drift_check_interval`` seconds, subscriptions with a built VM are
        submitted too, so the worker compares the VM with Proxmox (stopped or deleted by hand).
        While catching up nothing is created or minted; a dead-lettered subscription waits for
        an operator, except that it is still stopped and destroyed on time."""
        for sub_id, future in list(self._inflight.items()):
            if future.done():
                del self._inflight[sub_id]
                self._waits[sub_id] = self._waits.get(sub_id, 0) + 1 if future.result() else 0
        state = store.chain_state()
        chain_time = state.chain_time
        if chain_time is None:
            return 0
        chain_wide = chain_scope(state.confirmed_head, state.applied_block,
                                 self.config.chain.catch_up_blocks)
        submitted = 0
        now = time.monotonic()
        drift_check = now >= self._next_drift_check
        if drift_check:
            self._next_drift_check = now + self.config.proxmox.drift_check_interval
        blocked = DeadLetters(store.conn).blocked()
        grace = self.config.grace_seconds
        progress_of = ProgressStore(store.conn).all()
        for sub in store.subscriptions():
            if sub.id in self._inflight:
                continue
            scope = (Scope.TEARDOWN_ONLY if is_blocked(blocked, sub.id, sub.updated_block)
                     else chain_wide)
            progress = progress_of.get(sub.id, Progress())
            observed, record = observe(sub, progress, inventory)
            built = record is not None and record.state in BUILT_STATES
            action = next_action(facts_of(sub), chain_time, grace, observed, scope)
            if scope is Scope.TEARDOWN_ONLY and action is None:
                continue  # dead-lettered and nothing to take down: the operator decides
            if not (drift_check and built):
                if not due(sub.id, progress, now, self._last_try, self._waits.get(sub.id, 0)):
                    continue
                if (action is None and not progress.last_error
                        and subscription_state(sub, progress, inventory, chain_time, grace)
                        == progress.state):
                    continue
            self._last_try[sub.id] = now
            self._inflight[sub.id] = pool.submit(self._work, sub.id, chain_time, scope)
            submitted += 1
        return submitted

    def _date_unserved(self, rpc: RpcClient, store: Store) -> None:
        """Fetch the purchase time of a few never-served subscriptions (for their refund)."""
        chain_time = store.chain_state().chain_time
        if chain_time is None:
            return
        try:
            blocks = undated_unserved_purchases(store.conn, chain_time)
            if blocks:
                date_purchases(store.conn, {n: _quantity(rpc.get_block(n)["timestamp"])
                                            for n in blocks})
        except Exception as exc:  # noqa: BLE001 - only a status detail; the next loop retries
            log.warning("unserved.dating_failed", error=f"{type(exc).__name__}: {exc}"[:200])

    # -- main loop -----------------------------------------------------------------------

    def _observe(self, store: Store, inventory: Inventory) -> None:
        """Refresh the totals shown on /metrics (cheap COUNT queries, once per loop)."""
        chain_time = store.chain_state().chain_time
        by_state: dict[str, int] = {}
        progress_of = ProgressStore(store.conn).all()
        for sub in store.subscriptions():
            progress = progress_of.get(sub.id, Progress())
            state = (subscription_state(sub, progress, inventory, chain_time,
                                        self.config.grace_seconds)
                     if chain_time is not None else progress.state)
            by_state[state] = by_state.get(state, 0) + 1
        # Temporary failures retry for as long as it takes; an outage shows here, not as DLQ.
        self.health.failing_subscriptions = by_state.get("failed", 0)
        txs = TxStore(store.conn)
        self.metrics.observe_totals(dead_letters=DeadLetters(store.conn).open_count(),
                                    pending_txs=txs.pending_count(), by_state=by_state)
        self.metrics.observe_signer(txs.counters())
        # A signer that cannot pay (or whose fee cap is below the base fee) turns health red.
        self.health.signer_alerts = [f"{a.kind}: {a.message}" for a in txs.alerts()]

    def _resume_transactions(self) -> None:
        """Re-drive stored, unconfirmed transactions (rebroadcast the same bytes, bump fees,
        re-send after a reorg) even for subscriptions no worker is looking at."""
        minter = self._services().minter
        if minter is None:
            return
        try:
            minter.txm.resume()
        except Exception as exc:  # noqa: BLE001 - the next round retries; health shows alerts
            log.warning("tx.resume_failed", error=f"{type(exc).__name__}: {exc}"[:300])

    def _scan(self, rpc: RpcClient, store: Store) -> ScanResult | None:
        """One chain step with health bookkeeping; None when it failed (health shows why)."""
        was_halted = store.chain_state().halted_reason
        try:
            result = scan_once(rpc, store, self.config.chain, self.ranges,
                               prefetch=self.prefetch)
        except sqlite3.Error as exc:
            self.health.db_error = f"{type(exc).__name__}: {exc}"[:200]
            self.metrics.scan_errors.labels(error=type(exc).__name__).inc()
            log.error("chain.db_failed", error=self.health.db_error)
            return None
        except Exception as exc:  # noqa: BLE001 - keep following; health shows it
            self.health.last_scan_error = f"{type(exc).__name__}: {exc}"[:200]
            self.metrics.scan_errors.labels(error=type(exc).__name__).inc()
            log.warning("chain.scan_failed", error=self.health.last_scan_error)
            return None
        state = store.chain_state()
        if state.halted_reason and not was_halted:
            self.metrics.reorgs.labels(deep="true").inc()
        self.health.db_error = None
        self.health.last_scan_ok = time.monotonic()
        self.health.halted_reason = state.halted_reason
        self.health.caught_up = result.caught_up and result.outcome is not Outcome.HALTED
        self.metrics.observe_scan(result, state)
        return result

    def run(self) -> int:
        """Follow the chain until stopped, as the only listener of ``db.path``. Under umask
        077 (as the unit sets it, also when started by hand): whatever the daemon or its
        children (terraform) create is private; the old umask is back once it returns."""
        old_umask = os.umask(0o077)
        try:
            with InstanceLock.held(self.config.db.path, "listen"):
                return self._run()
        finally:
            os.umask(old_umask)

    def _bind_chain(self, rpc: RpcClient, store: Store) -> None:
        self.chain_id = rpc.chain_id()
        store.bind_chain(self.chain_id)

    def _start_check(self, check: Callable[[int | None], None]) -> None:
        check(self.chain_id)

    def _pass_start_gate(self, rpc: RpcClient, store: Store) -> bool:
        """Chain id, services (bad keys / backend config fail here) and the start-up repair
        (the database learns what Proxmox and the chain know, before anything is handed
        out), retried through an outage; False when stopped first."""
        steps = [StartStep("chain_id", "RPC", lambda: self._bind_chain(rpc, store)),
                 StartStep("services", "Proxmox", self._services),
                 *[StartStep("start_check", "Proxmox", partial(self._start_check, check))
                   for check in self.start_checks],
                 StartStep("repair", "RPC", lambda: repair_at_start(
                     self._services(), rpc, on_progress=liveness.feed_watchdog))]
        try:
            with interruptible(self.stop):
                return StartGate(self.health, self.stop_event).open(steps)
        except StartInterrupted:
            return False

    def _run(self) -> int:
        cfg = self.config
        rpc = RpcClient(cfg.chain.rpc_urls, expected_chain_id=cfg.chain.chain_id,
                        timeout=liveness.RPC_TIMEOUT, attempts=liveness.RPC_ATTEMPTS,
                        backoff_initial=liveness.RPC_BACKOFF_INITIAL,
                        backoff_max=liveness.RPC_BACKOFF_MAX)
        store = Store.open(cfg.db.path)
        inventory = Inventory(store.conn)
        if cfg.chain.subscription_contract:
            self.prefetch = LogPrefetcher(rpc, address=cfg.chain.subscription_contract,
                                          controller=self.ranges)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stop())
        # /healthz and READY first: an outage at start is waited out in the gate, visibly
        server = serve(cfg.metrics.listen, self.metrics, self.health) if cfg.metrics.listen else None
        liveness.sd_notify("READY=1")
        if not self._pass_start_gate(rpc, store):
            log.info("daemon.stopping", inflight=0)
            if server is not None:
                server.shutdown()
            store.close()
            return 0
        self._resume_transactions()
        next_resume = time.monotonic() + TX_RESUME_INTERVAL
        next_dating = time.monotonic()
        log.info("daemon.started", cursor=store.chain_state().cursor,
                 start_block=cfg.chain.start_block, confirmations=cfg.chain.confirmations)
        self._start_heads()
        with (WalCheckpointer(cfg.db.path),
              ThreadPoolExecutor(max_workers=cfg.proxmox.max_parallel,
                                 thread_name_prefix="reconcile") as pool):
            while not self.stop_event.is_set():
                # Liveness, not health: fed between phases whatever their outcome.
                liveness.feed_watchdog()
                result = self._scan(rpc, store)
                liveness.feed_watchdog()
                if result is None:
                    liveness.pause(self.stop_event.wait, cfg.chain.poll_interval,
                                   stop=self.stop_event)
                    continue
                if result.outcome is not Outcome.HALTED:
                    self.dispatch(pool, store, inventory)
                    if time.monotonic() >= next_dating:
                        self._date_unserved(rpc, store)
                        next_dating = time.monotonic() + UNSERVED_DATING_INTERVAL
                    liveness.feed_watchdog()
                if server is not None:  # the totals are only read by /metrics and /healthz
                    self._observe(store, inventory)
                if time.monotonic() >= next_resume:
                    self._resume_transactions()
                    next_resume = time.monotonic() + TX_RESUME_INTERVAL
                if result.outcome is Outcome.REORGED or (
                        result.outcome is Outcome.PROGRESSED and not result.caught_up):
                    continue
                self._idle()
            log.info("daemon.stopping", inflight=len(self._inflight))
        if self.heads is not None:
            self.heads.stop()
        if server is not None:
            server.shutdown()
        store.close()
        return 0


