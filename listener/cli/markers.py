"""``blockhost markers migrate [--dry-run] [--json]``: give the VMs made before deployment ids
ours, where our inventory knows them; print what changed and what was skipped, and why."""

from __future__ import annotations

import argparse

from listener.cli.output import print_json
from listener.cli.parser import config_from


def run(args: argparse.Namespace) -> int:
    from listener.ops.markers import migrate_markers

    report = migrate_markers(config_from(args), dry_run=args.dry_run)
    if args.json:
        print_json(report.as_dict())
        return 0
    changed = sum(o.action in ("migrated", "would migrate") for o in report.outcomes)
    verb = "would add" if report.dry_run else "added"
    print(f"deployment {report.deployment}: {verb} the id to {changed} VM(s)")
    for outcome in report.outcomes:
        print(outcome.line())
    return 0
