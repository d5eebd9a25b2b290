"""``blockhost import-reference --vms-json FILE [--config-dir DIR] [--dry-run] [--from-block N]
[--json]``: adopt the reference system's VMs; one line per VM adopted or not adopted (with
why)."""

from __future__ import annotations

import argparse

from listener.cli.output import print_json
from listener.cli.parser import config_from


def run(args: argparse.Namespace) -> int:
    from listener.ops.import_reference import import_reference

    report = import_reference(config_from(args), vms_json=args.vms_json,
                              config_dir=args.config_dir, dry_run=args.dry_run,
                              from_block=args.from_block)
    if args.json:
        print_json(report.to_json())
    else:
        print("\n".join(report.lines()))
    return 0
