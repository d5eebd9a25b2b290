"""``python -m bench``: replay throughput of the listener against web3.py baselines.

Exit codes: 0 done, 1 a path journaled the wrong events or the chain could not be set up,
2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from rich.console import Console

from bench.cli_args import add_output_options, positive_int
from bench.paths import PATH_KEYS, PATHS
from bench.report import command_line, render_table, to_json
from bench.runner import BenchError, run_bench
from listener.errors import UserError
from listener.logging_setup import configure as configure_logs


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
    parser.add_argument("--events-per-block", type=positive_int, default=100,
                        help="events mined per block (default 100)")
    parser.add_argument("--block-range", type=positive_int, default=100,
                        help="blocks per eth_getLogs request (default 100, i.e. 10000 logs "
                             "per response at the default density)")
    parser.add_argument("--paths", default=",".join(PATH_KEYS),
                        help=f"comma-separated subset of: {', '.join(PATH_KEYS)}")
    add_output_options(parser, workdir_help="where anvil's log and the SQLite files go (default: a temp dir)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    wanted = [key.strip() for key in args.paths.split(",") if key.strip()]
    unknown = sorted(set(wanted) - set(PATH_KEYS))
    if unknown or not wanted:
        parser.error(f"unknown path(s) {', '.join(unknown) or '(none given)'}; "
                     f"choose from {', '.join(PATH_KEYS)}")
    scenarios = [p for p in PATHS if p.key in wanted]
    # the scanner logs one line per range; keep stdout for the JSON and the table readable
    configure_logs(sys.stderr, level=logging.WARNING)
    console = Console(stderr=args.json)
    if not console.is_terminal:
        console.width = 120  # a log file or pipe: keep table rows on one line each
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
        json.dump(to_json(run, command_line()), sys.stdout, indent=2)
        sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
