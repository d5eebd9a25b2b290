"""``blockhost reorg show|accept``: a deep-reorg halt, and accepting the canonical chain."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from listener.cli.output import print_json
from listener.cli.parser import config_from

if TYPE_CHECKING:
    from listener.chain.deep_reorg import Fork
    from listener.chain.retraction import ForkAccepted


def run(args: argparse.Namespace) -> int:
    handlers = {"show": cmd_show, "accept": cmd_accept}
    return handlers[args.reorg_command](args)


def cmd_show(args: argparse.Namespace) -> int:
    from listener.ops.reorg import show_fork

    fork = show_fork(config_from(args))
    if args.json:
        print_json(fork.to_json())
    else:
        print(render_fork(fork))
    return 0


def cmd_accept(args: argparse.Namespace) -> int:
    from listener.ops.reorg import accept_fork

    fork, accepted = accept_fork(config_from(args), yes=args.yes)
    if args.json:
        print_json({"fork": fork.to_json(),
                    "accepted": None if accepted is None else accepted.to_json()})
        return 0
    print(render_fork(fork))
    if accepted is None:
        print("dry run: nothing changed; stop the listener, then add --yes to accept the "
              "canonical chain")
    else:
        print(render_accepted(fork, accepted))
    return 0


def render_fork(fork: Fork) -> str:
    """The halt, the common ancestor and what lies above it on the orphaned fork."""
    lines = [f"HALTED: {fork.halted}" if fork.halted else "not halted",
             f"cursor {fork.cursor} (confirmed {fork.confirmed_cursor}); canonical chain "
             f"confirmed up to block {fork.confirmed_head}",
             f"common ancestor: block {fork.ancestor} {fork.ancestor_hash}",
             f"orphaned above it: {fork.orphaned_block_count} known block(s), "
             f"{fork.orphaned_events} journaled event(s); affected subscriptions: "
             f"{', '.join(f'#{i}' for i in fork.affected_subscriptions) or 'none'}"]
    lines += [f"  block {b.number}: stored {b.stored_hash}, canonical "
              f"{b.canonical_hash or '(none: the canonical chain is shorter)'}"
              for b in fork.orphaned_blocks]
    hidden = fork.orphaned_block_count - len(fork.orphaned_blocks)
    if hidden > 0:
        lines.append(f"  … and {hidden} older orphaned block(s)")
    return "\n".join(lines)


def render_accepted(fork: Fork, accepted: ForkAccepted) -> str:
    ended = ", ".join(f"#{i}" for i in accepted.unpurchased)
    lines = [f"accepted the canonical chain: {accepted.retracted_events} orphaned event(s) "
             f"retracted, {accepted.journaled_events} canonical event(s) journaled, cursor at "
             f"block {fork.confirmed_head}; facts re-derived for "
             f"{len(accepted.rederived)} subscription(s); the halt is cleared"]
    if ended:
        lines.append(f"purchases no longer on chain: {ended}; their paid time ends at block "
                     f"{fork.ancestor}'s time (VMs stop, then go after the grace period)")
    lines.append("start the listener again (`systemctl start blockhost-listener`)")
    return "\n".join(lines)
