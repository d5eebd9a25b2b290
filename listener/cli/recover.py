"""``blockhost recover [--dry-run] [--json]``: rebuild the database from Proxmox and the chain;
one line per finding (or one JSON object)."""

from __future__ import annotations

import argparse

from listener.cli.output import print_json
from listener.cli.parser import config_from


def run(args: argparse.Namespace) -> int:
    from listener.ops.recover import run_recover

    report = run_recover(config_from(args), dry_run=args.dry_run)
    if args.json:
        print_json(report.to_json())
    else:
        print("\n".join(report.lines()))
    return 0
