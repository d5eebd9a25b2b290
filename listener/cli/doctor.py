"""``blockhost doctor [--json]``: check a configured host; exit 1 when any check fails."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from listener.ops.doctor import run_checks
    from listener.ops.doctor.report import failures, render_json, render_table

    checks = run_checks(args.config)
    print(render_json(checks) if args.json else render_table(checks))
    return 1 if failures(checks) else 0
