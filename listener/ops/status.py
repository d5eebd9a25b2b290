"""``blockhost status``: one read-only snapshot of cursor, subscriptions, VMs and NFTs."""

from __future__ import annotations

from typing import Any

from listener.config import Config
from listener.reconcile.dead_letters import DeadLetters
from listener.reconcile.reconciler import subscription_state
from listener.chain.journal import Store
from listener.writeback.tx_store import TxStore
from provisioner.inventory import Inventory


def snapshot(config: Config, store: Store, inventory: Inventory) -> dict[str, Any]:
    """The status document (SPEC §8); never includes secrets or ciphertexts."""
    chain = store.chain_state()
    chain_time = chain.chain_time or 0
    txs = TxStore(store.conn)
    subscriptions: list[dict[str, Any]] = []
    for sub in store.subscriptions():
        record = inventory.live_for_subscription(sub.id)
        vm = None
        if record is not None:
            vm = {"name": record.name, "vmid": record.vmid, "node": record.node,
                  "ip": record.ipv4, "ipv6": record.ipv6, "power": record.state}
        nft = None
        if sub.token_id is not None:
            nft = {"token_id": sub.token_id, "state": "minted",
                   "expires_at": sub.nft_expires_at, "note": sub.credential_note}
        else:
            tx = txs.get(f"mint:sub:{sub.id}")
            if tx is not None:
                nft = {"token_id": None, "state": tx.state, "tx_hash": tx.tx_hash}
        subscriptions.append({
            "id": sub.id,
            "subscriber": sub.subscriber,
            "plan_id": sub.plan_id,
            "expires_at": sub.expires_at,
            "cancelled": sub.cancelled,
            "state": subscription_state(sub, inventory, chain_time, config.grace_seconds)
            if chain.chain_time is not None else sub.state,
            "vm": vm,
            "nft": nft,
            "last_error": sub.last_error,
        })
    lag = None
    if chain.confirmed_head is not None and chain.applied_block is not None:
        # How far the facts we act on trail the confirmed head.
        lag = max(0, chain.confirmed_head - chain.applied_block)
    shallow, deep = store.reorg_count()
    return {
        "chain": {
            "chain_id": chain.chain_id,
            "head": chain.head,
            "confirmed_head": chain.confirmed_head,
            "cursor": chain.cursor,
            "confirmed_cursor": chain.applied_block,
            "lag": lag,
            "reorgs": {"handled": shallow, "deep": deep},
            "chain_time": chain.chain_time,
            "halted": chain.halted_reason,
        },
        "events": store.event_count(),
        "subscriptions": subscriptions,
        "dead_letters": DeadLetters(store.conn).open_count(),
        "pending_transactions": txs.pending_count(),
        "signer_alerts": [f"{a.kind}: {a.message}" for a in txs.alerts()],
    }


def render_text(doc: dict[str, Any]) -> str:
    """A compact human view of :func:`snapshot`."""
    chain = doc["chain"]
    lines = [
        f"chain {chain['chain_id']}  head {chain['head']}  confirmed {chain['confirmed_head']}  "
        f"cursor {chain['cursor']} (confirmed {chain['confirmed_cursor']})  lag {chain['lag']}  "
        f"chain time {chain['chain_time']}  reorgs {chain['reorgs']['handled']} handled, "
        f"{chain['reorgs']['deep']} deep",
    ]
    if chain["halted"]:
        lines.append(f"HALTED: {chain['halted']}")
    lines.append(f"events journaled {doc['events']}  pending transactions "
                 f"{doc['pending_transactions']}  dead letters {doc['dead_letters']}")
    for alert in doc["signer_alerts"]:
        lines.append(f"SIGNER ALERT: {alert}")
    for sub in doc["subscriptions"]:
        vm = sub["vm"]
        vm_text = (f"{vm['name']} vmid {vm['vmid']} on {vm['node']} ip {vm['ip']} ({vm['power']})"
                   if vm else "no VM")
        nft = sub["nft"]
        nft_text = f"token {nft['token_id']} ({nft['state']})" if nft else "no NFT"
        line = f"#{sub['id']:<5} {sub['state']:<12} {vm_text}; {nft_text}"
        if sub["last_error"]:
            line += f"; last error: {sub['last_error']}"
        lines.append(line)
    return "\n".join(lines)
