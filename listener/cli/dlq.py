"""``blockhost dlq list|retry|drop``: the dead letters, and what the listener does next."""

from __future__ import annotations

import argparse

from listener.cli.output import print_json
from listener.cli.parser import config_from


def run(args: argparse.Namespace) -> int:
    handlers = {"list": cmd_dlq_list, "retry": cmd_dlq_retry, "drop": cmd_dlq_drop}
    return handlers[args.dlq_command](args)


def cmd_dlq_list(args: argparse.Namespace) -> int:
    from listener.ops.dead_letters import list_dead_letters

    entries = list_dead_letters(config_from(args), include_resolved=args.all)
    if args.json:
        print_json({"dead_letters": [e.to_json() for e in entries]})
        return 0
    for entry in entries:
        print(f"{entry.id}  subscription #{entry.subscription_id}  {entry.state}  "
              f"{entry.action} after {entry.attempts} attempt(s): {entry.reason}")
    if not entries:
        print("no dead letters")
    return 0


def cmd_dlq_retry(args: argparse.Namespace) -> int:
    from listener.ops.dead_letters import retry_dead_letter

    entry = retry_dead_letter(config_from(args), args.id)
    print(f"dead letter {entry.id} closed: subscription #{entry.subscription_id} "
          "will be retried by the running listener")
    return 0


def cmd_dlq_drop(args: argparse.Namespace) -> int:
    from listener.ops.dead_letters import drop_dead_letter

    entry = drop_dead_letter(config_from(args), args.id)
    print(f"dead letter {entry.id} dropped: subscription #{entry.subscription_id} "
          "is left as it is until new chain facts arrive for it")
    return 0
