"""``blockhost replay``: one JSON report on stdout; exit 1 when the range holds a fork."""

from __future__ import annotations

import argparse

from listener.cli.output import print_error, print_json
from listener.cli.parser import config_from


def run(args: argparse.Namespace) -> int:
    from listener.cli.progress import progress_reporter
    from listener.ops.replay import run_replay

    report = run_replay(config_from(args), from_block=args.from_block, to_block=args.to_block,
                        dry_run=args.dry_run, progress=progress_reporter)
    print_json(report.to_json())
    if report.conflicts:
        print_error(f"{report.conflicts} event(s) in the range sit in blocks whose hash differs "
                    "from the journal (a fork deeper than the confirmation depth); see the logs "
                    "and `blockhost status`")
        return 1
    return 0
