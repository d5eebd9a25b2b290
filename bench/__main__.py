"""``python -m bench``: replay throughput of the listener against web3.py baselines.

Exit codes: 0 done, 1 a path journaled the wrong events or the chain could not be set up,
2 bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys

from bench.cli_args import (
    add_output_options,
    add_subset_option,
    add_workload_options,
    command_line,
    parse_subset,
    positive_int,
    print_json,
    report_console,
)
from bench.paths import PATH_KEYS, PATHS
from bench.report import render_table, to_json
from bench.runner import BenchError, run_bench
from listener.errors import UserError
from listener.runtime.logging_setup import configure as configure_logs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Replay N SubscriptionCreated events from a local anvil through several "
                    "listener implementations and report events/s (medians, ratios).",
    )
    parser.add_argument("--events", type=positive_int, default=100_000,
                        help="events to produce and replay (default 100000)")
    parser.add_argument("--repeat", type=positive_int, default=3,
                        help="repetitions per path; the median is reported (default 3)")
    add_workload_options(parser)
    add_subset_option(parser, "--paths", PATH_KEYS)
    add_output_options(
        parser, workdir_help="where anvil's log and the SQLite files go (default: a temp dir)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    wanted = parse_subset(parser, "--paths", args.paths, PATH_KEYS)
    scenarios = [p for p in PATHS if p.key in wanted]
    # the scanner logs one line per range; keep stdout for the JSON and the table readable
    configure_logs(sys.stderr, level=logging.WARNING)
    console = report_console(args.json, width=120)
    try:
        run = run_bench(events=args.events, repeat=args.repeat,
                        events_per_block=args.events_per_block, block_range=args.block_range,
                        scenarios=scenarios, workdir=args.workdir,
                        say=lambda message: console.log(message))
    except (BenchError, UserError, RuntimeError, OSError) as exc:
        console.print(f"bench failed: {exc}", style="red", markup=False)
        return 1
    render_table(run, console)
    if args.json:
        print_json(to_json(run, command_line("python -m bench", argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
