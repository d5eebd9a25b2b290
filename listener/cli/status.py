"""``blockhost status``: cursor, subscriptions, VMs and NFTs, as JSON or a compact text view."""

from __future__ import annotations

import argparse
from typing import Any

from listener.cli.output import print_json
from listener.cli.parser import config_from


def run(args: argparse.Namespace) -> int:
    from listener.ops.status import status_report

    doc = status_report(config_from(args))
    if args.json:
        print_json(doc)
    else:
        print(render_text(doc))
    return 0


def render_text(doc: dict[str, Any]) -> str:
    """A compact human view of the status document."""
    lines = _chain_lines(doc)
    lines += [_subscription_line(sub) for sub in doc["subscriptions"]]
    return "\n".join(lines)


def _chain_lines(doc: dict[str, Any]) -> list[str]:
    chain = doc["chain"]
    lines = [
        f"deployment {chain['deployment']}  chain {chain['chain_id']}  head {chain['head']}  "
        f"confirmed {chain['confirmed_head']}  "
        f"cursor {chain['cursor']} (confirmed {chain['confirmed_cursor']})  lag {chain['lag']}  "
        f"chain time {chain['chain_time']}  reorgs {chain['reorgs']['handled']} handled, "
        f"{chain['reorgs']['deep']} deep",
    ]
    if chain["halted"]:
        lines.append(f"HALTED: {chain['halted']}")
    lines.append(f"events journaled {doc['events']}  pending transactions "
                 f"{doc['pending_transactions']}  dead letters {doc['dead_letters']}")
    lines += [f"SIGNER ALERT: {alert}" for alert in doc["signer_alerts"]]
    return lines


def _subscription_line(sub: dict[str, Any]) -> str:
    vm = sub["vm"]
    vm_text = (f"{vm['name']} vmid {vm['vmid']} on {vm['node']} ip {vm['ip']} ({vm['power']})"
               if vm else "no VM")
    nft = sub["nft"]
    nft_text = f"token {nft['token_id']} ({nft['state']})" if nft else "no NFT"
    line = f"#{sub['id']:<5} {sub['state']:<12} {vm_text}; {nft_text}"
    if sub.get("never_served"):
        line += (f"; never served: ended before a VM was built, "
                 f"{sub['paid_unserved_seconds']} s paid (refund?)")
    if sub["last_error"]:
        line += f"; last error: {sub['last_error']}"
    return line
