"""``blockhost status``: one read-only snapshot of cursor, subscriptions, VMs and NFTs."""

from __future__ import annotations

from contextlib import closing
from typing import Any

from listener.chain.journal import ChainState, Store, Subscription
from listener.config import Config
from listener.ops.database import open_database
from listener.reconcile.dead_letters import DeadLetters
from listener.reconcile.decide import paid_unserved_seconds
from listener.reconcile.observe import facts_of, subscription_state
from listener.reconcile.progress import Progress, ProgressStore
from listener.redact import redact
from listener.writeback.tx_store import TxStore
from provisioner.inventory import Inventory


def status_report(config: Config) -> dict[str, Any]:
    """The status document of the existing database (see :func:`snapshot`)."""
    with closing(open_database(config)) as store:
        return snapshot(config, store, Inventory(store.conn))


def snapshot(config: Config, store: Store, inventory: Inventory) -> dict[str, Any]:
    """The status document (SPEC §8); never includes secrets or ciphertexts."""
    chain = store.chain_state()
    txs = TxStore(store.conn)
    progress = ProgressStore(store.conn)
    progress_of, served = progress.all(), progress.served()
    bought = store.purchase_times()
    return {
        "chain": _chain_doc(chain, store),
        "events": store.event_count(),
        "subscriptions": [
            {**_subscription_doc(sub, progress_of.get(sub.id, Progress()), inventory, txs,
                                 chain_time=chain.chain_time,
                                 grace_seconds=config.grace_seconds),
             **_service_doc(sub, progress_of.get(sub.id, Progress()), bought.get(sub.id),
                            chain_time=chain.chain_time, grace_seconds=config.grace_seconds,
                            served=sub.id in served)}
            for sub in store.subscriptions()],
        "dead_letters": DeadLetters(store.conn).open_count(),
        "pending_transactions": txs.pending_count(),
        "signer_alerts": [redact(f"{a.kind}: {a.message}") for a in txs.alerts()],
    }


def _redacted(text: str | None) -> str | None:
    return None if text is None else redact(text)


def _chain_doc(chain: ChainState, store: Store) -> dict[str, Any]:
    lag = None
    if chain.confirmed_head is not None and chain.applied_block is not None:
        # How far the facts we act on trail the confirmed head.
        lag = max(0, chain.confirmed_head - chain.applied_block)
    shallow, deep = store.reorg_count()
    return {
        "chain_id": chain.chain_id,
        "deployment": store.deployment_id(),
        "head": chain.head,
        "confirmed_head": chain.confirmed_head,
        "cursor": chain.cursor,
        "confirmed_cursor": chain.applied_block,
        "lag": lag,
        "reorgs": {"handled": shallow, "deep": deep},
        "chain_time": chain.chain_time,
        "halted": _redacted(chain.halted_reason),
    }


def _subscription_doc(sub: Subscription, progress: Progress, inventory: Inventory,
                      txs: TxStore, *, chain_time: int | None,
                      grace_seconds: int) -> dict[str, Any]:
    state = (progress.state if chain_time is None
             else subscription_state(sub, progress, inventory, chain_time, grace_seconds))
    return {
        "id": sub.id,
        "subscriber": sub.subscriber,
        "plan_id": sub.plan_id,
        "expires_at": sub.expires_at,
        "cancelled": sub.cancelled,
        "state": state,
        "vm": _vm_doc(inventory, sub.id),
        "nft": _nft_doc(txs, sub.id, progress),
        # rows written before redaction existed are scrubbed on the way out as well
        "last_error": _redacted(progress.last_error),
    }


def _service_doc(sub: Subscription, progress: Progress, purchased_at: int | None, *,
                 chain_time: int | None, grace_seconds: int, served: bool) -> dict[str, Any]:
    """Whether the subscriber ever got a VM; if the subscription ended before it could be
    served (e.g. it expired while no listener ran), what it paid for, for a refund."""
    unserved = None if chain_time is None else paid_unserved_seconds(
        facts_of(sub), purchased_at, chain_time, grace_seconds,
        served=served or progress.token_id is not None)
    return {"never_served": unserved is not None, "paid_unserved_seconds": unserved}


def _vm_doc(inventory: Inventory, subscription_id: int) -> dict[str, Any] | None:
    record = inventory.live_for_subscription(subscription_id)
    if record is None:
        return None
    return {"name": record.name, "vmid": record.vmid, "node": record.node,
            "ip": record.ipv4, "ipv6": record.ipv6, "power": record.state}


def _nft_doc(txs: TxStore, subscription_id: int, progress: Progress) -> dict[str, Any] | None:
    if progress.token_id is not None:
        return {"token_id": progress.token_id, "state": "minted",
                "expires_at": progress.nft_expires_at, "note": progress.credential_note}
    tx = txs.get(f"mint:sub:{subscription_id}")
    if tx is None:
        return None
    return {"token_id": None, "state": tx.state, "tx_hash": tx.tx_hash}
