"""The command-line pieces every bench command shares: value types (one-line errors, exit 2),
common options, and how results reach the terminal and stdout."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console


def positive_int(text: str) -> int:
    """A whole number >= 1; ``100_000`` and ``100,000`` are accepted."""
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return value


def add_output_options(parser: argparse.ArgumentParser, *, workdir_help: str) -> None:
    """``--workdir`` and ``--json``, the same in every bench command."""
    parser.add_argument("--workdir", type=Path, default=None, help=workdir_help)
    parser.add_argument("--json", action="store_true",
                        help="print the results as JSON on stdout (the table goes to stderr)")


def add_subset_option(parser: argparse.ArgumentParser, flag: str, choices: Sequence[str]) -> None:
    """``flag`` takes a comma-separated subset of ``choices`` (default: all of them)."""
    parser.add_argument(flag, default=",".join(choices),
                        help=f"comma-separated subset of: {', '.join(choices)}")


def parse_subset(parser: argparse.ArgumentParser, flag: str, text: str,
                 choices: Sequence[str]) -> list[str]:
    """The keys given to ``flag``, in order; a usage error (exit 2) for unknown or none."""
    wanted = [key.strip() for key in text.split(",") if key.strip()]
    unknown = sorted(set(wanted) - set(choices))
    if unknown or not wanted:
        parser.error(f"{flag}: unknown {', '.join(unknown) or '(none given)'}; "
                     f"choose from {', '.join(choices)}")
    return wanted


def add_workload_options(parser: argparse.ArgumentParser) -> None:
    """How the bench chain is shaped: events per block and blocks per ``eth_getLogs``."""
    parser.add_argument("--events-per-block", type=positive_int, default=100,
                        help="events mined per block (default 100)")
    parser.add_argument("--block-range", type=positive_int, default=100,
                        help="blocks per eth_getLogs request (default 100, i.e. 10000 logs "
                             "per response at the default density)")


def report_console(json_output: bool, *, width: int) -> Console:
    """Progress and tables on stderr when stdout carries the JSON; a fixed width when not a
    terminal (a log file or pipe), so table rows stay on one line each."""
    console = Console(stderr=json_output)
    if not console.is_terminal:
        console.width = width
    return console


def command_line(prog: str, argv: Sequence[str] | None) -> str:
    """The command as run, for the JSON report (``argv`` None: this process's arguments)."""
    return " ".join([prog, *(sys.argv[1:] if argv is None else argv)])


def print_json(document: dict[str, Any]) -> None:
    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")
