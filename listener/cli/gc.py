"""``blockhost gc`` (and the seed's ``blockhost-vm-gc``): the chain time it judged by, then the
steps, shown or applied; exit 1 if any step failed (or could not be checked on chain)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from listener.cli.output import print_json
from listener.cli.parser import config_from

if TYPE_CHECKING:
    from listener.ops.gc import GcMode, GcReport, Verdict


def run(args: argparse.Namespace) -> int:
    from listener.ops.gc import run_gc

    config = config_from(args)
    report = run_gc(config, mode=_mode(args), grace_days=args.grace_days, execute=args.execute)
    if args.json:
        print_json(report.to_json())
    else:
        print(render(report))
    return 1 if report.failed else 0


def _mode(args: argparse.Namespace) -> GcMode:
    from listener.ops.gc import GcMode

    if args.suspend_only:
        return GcMode.SUSPEND_ONLY
    return GcMode.DESTROY_ONLY if args.destroy_only else GcMode.ALL


def render(report: GcReport) -> str:
    """The chain time's line (saying when it is the stored one, not live), then one line per
    step."""
    lines = [report.time.describe()]
    lines += [_verdict_line(v, execute_mode=report.execute) for v in report.verdicts]
    return "\n".join(lines if report.verdicts else [*lines, "nothing to collect"])


def _verdict_line(v: Verdict, *, execute_mode: bool) -> str:
    verb = {"stop": "suspend", "destroy": "destroy"}[v.action]
    prefix = "" if execute_mode else "would "
    owner = "made by hand" if v.subscription_id is None else f"subscription #{v.subscription_id}"
    outcome = "" if v.result == "planned" else f": {v.result}"
    return (f"{prefix}{verb} {v.vm_name} (vmid {v.vmid} on {v.node}, {owner}, expired at "
            f"{v.expires_at}, grace ends {v.grace_ends_at}){outcome}")
