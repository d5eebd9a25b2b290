"""``python -m bench.rss``: peak memory of a replay, and how it grows with the range.

Each ``--events`` size gets its own fresh anvil holding exactly that many events
(``bench.emitter.produce``), replayed through a path of :mod:`bench.paths` in a FRESH child
process; the parent reads that child's peak RSS (``ru_maxrss`` from ``os.wait4``), so
neither the parent, anvil nor an earlier size is counted. A path that never holds more than
a bounded number of responses stays flat: its peak should not grow by anything like one
log's size per event. The slope (least squares, MB per 10,000 events) is reported next to
what holding every event's JSON would cost.

Exit codes: 0 done (the table says whether the limit and flatness hold), 1 a child failed or
journaled the wrong number of events, or the chain could not be set up, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.cli_args import (
    add_output_options,
    add_subset_option,
    add_workload_options,
    command_line,
    parse_subset,
    print_json,
    report_console,
)
from bench.emitter import JsonRpc, Workload, produce
from bench.report import environment
from listener.devkit.devchain import start_anvil
from listener.errors import UserError

PATH_KEYS = ("ours-journal", "web3-batched")
BASELINE = "web3-batched"
#: Issue 7's bound for a 100,000-event replay.
LIMIT_MB = 150.0
#: "Flat": the fitted growth is below this fraction of holding every event's JSON.
FLAT_FRACTION = 0.10
REPO_ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024


class RssBenchError(RuntimeError):
    """A child replay failed or journaled another number of events than expected."""


@dataclass(frozen=True)
class Sample:
    """One child's replay of one chain."""

    events: int
    peak_mb: float
    after_import_mb: float
    seconds: float


@dataclass
class PathSeries:
    key: str
    samples: list[Sample] = field(default_factory=list)

    def slope_mb_per_10k(self) -> float | None:
        """Least-squares growth of the peak, MB per 10,000 events (None for one size)."""
        if len({s.events for s in self.samples}) < 2:
            return None
        xs = [s.events / 10_000 for s in self.samples]
        ys = [s.peak_mb for s in self.samples]
        return statistics.linear_regression(xs, ys).slope


@dataclass
class RssRun:
    workload: Workload
    sizes: list[int]
    block_range: int
    log_json_bytes: float
    series: list[PathSeries]
    limit_mb: float

    @property
    def logs_per_request(self) -> int:
        return self.block_range * self.workload.events_per_block

    @property
    def hold_all_mb_per_10k(self) -> float:
        """What keeping every event's JSON in memory would add per 10,000 events."""
        return self.log_json_bytes * 10_000 / MIB


# -- the child --------------------------------------------------------------------------------


def _vm_kb(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


def child_main(spec_json: str) -> int:
    """Run one path over one chain; print {events, seconds, after_import_kb} as JSON."""
    from bench.paths import PATHS, Replay

    after_import_kb = _vm_kb("VmRSS")
    spec = json.loads(spec_json)
    scenario = next(p for p in PATHS if p.key == spec["path"])
    replay = Replay(spec["url"], spec["address"], spec["first_block"], spec["last_block"],
                    spec["block_range"])
    started = time.perf_counter()
    count = scenario.run(replay, Path(spec["db"]))
    seconds = time.perf_counter() - started
    print(json.dumps({"events": count, "seconds": seconds, "after_import_kb": after_import_kb}))
    return 0


def run_child(spec: dict[str, Any], *, timeout: float = 1800.0) -> tuple[dict[str, Any], float]:
    """Start a fresh interpreter for ``spec``; return its report and its peak RSS in MB."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.rss", "--child", json.dumps(spec)],
            cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                process.kill()
                os.wait4(process.pid, 0)
                raise RssBenchError(f"{spec['path']} did not finish within {timeout:.0f} s")
            time.sleep(0.05)
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            tail = err.read().decode(errors="replace")[-400:]
            raise RssBenchError(f"{spec['path']} child exited {process.returncode}: {tail}")
        report: dict[str, Any] = json.loads(out.read().decode().strip().splitlines()[-1])
    return report, usage.ru_maxrss / 1024  # Linux reports kilobytes


# -- the parent -------------------------------------------------------------------------------


def _log_json_bytes(url: str, workload: Workload) -> float:
    """Mean size of one log's JSON as the node sends it (what holding it all would cost)."""
    logs = JsonRpc(url).call("eth_getLogs", {"address": workload.address,
                                             "fromBlock": hex(workload.first_block),
                                             "toBlock": hex(workload.first_block)})
    return len(json.dumps(logs, separators=(",", ":"))) / max(1, len(logs))


def run_rss(*, sizes: list[int], events_per_block: int, block_range: int, paths: list[str],
            limit_mb: float = LIMIT_MB, workdir: Path | None = None,
            say: Callable[[str], None] = lambda _m: None) -> RssRun:
    """For each size: a fresh anvil holding exactly that many events, replayed by each path
    in a child process.

    One chain per size (not prefixes of one chain): ``bench.paths.ours_journal`` runs the
    real scan loop, which follows the chain up to its head whatever range it is given."""
    series = [PathSeries(key) for key in paths]
    workload: Workload | None = None
    log_bytes = 0.0
    with tempfile.TemporaryDirectory(prefix="blockhost-rss-", dir=workdir) as tmp:
        base = Path(tmp)
        for index, size in enumerate(sizes):
            anvil = start_anvil(base / f"anvil-{size}")
            try:
                workload = produce(anvil, size, events_per_block=events_per_block)
                say(f"produced {size:,} events on a fresh anvil in {workload.seconds:.1f} s")
                log_bytes = log_bytes or _log_json_bytes(anvil.url, workload)
                # Alternate the order so a noisy neighbour does not always hit the same path.
                order = series if index % 2 == 0 else list(reversed(series))
                for entry in order:
                    entry.samples.append(_measure(entry.key, anvil.url, workload, block_range,
                                                  base / f"{entry.key}-{size}.sqlite3"))
                    say(f"{entry.key} {size:,} events: peak RSS "
                        f"{entry.samples[-1].peak_mb:.1f} MB ({entry.samples[-1].seconds:.1f} s)")
            finally:
                anvil.stop()
    assert workload is not None
    return RssRun(workload, sizes, block_range, log_bytes, series, limit_mb)


def _measure(key: str, url: str, workload: Workload, block_range: int, db: Path) -> Sample:
    spec = {"path": key, "url": url, "address": workload.address,
            "first_block": workload.first_block, "last_block": workload.last_block,
            "block_range": block_range, "db": str(db)}
    try:
        report, peak_mb = run_child(spec)
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
    if report["events"] != workload.events:
        raise RssBenchError(f"{key} journaled {report['events']} events, the chain holds "
                            f"{workload.events}")
    return Sample(workload.events, peak_mb, report["after_import_kb"] / 1024, report["seconds"])


# -- presentation -----------------------------------------------------------------------------


def _verdict(run: RssRun, entry: PathSeries) -> dict[str, Any]:
    slope = entry.slope_mb_per_10k()
    largest = max(entry.samples, key=lambda s: s.events)
    # Below one response's worth of logs a larger chain means a larger response: that
    # measures the response size, not whether memory grows with the range.
    flat = None
    if slope is not None and min(run.sizes) >= run.logs_per_request:
        flat = slope < FLAT_FRACTION * run.hold_all_mb_per_10k
    return {
        "slope_mb_per_10k_events": None if slope is None else round(slope, 2),
        "flat": flat,
        "peak_mb_at_largest": round(largest.peak_mb, 1),
        "within_limit": largest.peak_mb <= run.limit_mb,
    }


def to_json(run: RssRun, command: str) -> dict[str, Any]:
    return {
        "command": command,
        "sizes": run.sizes,
        "events_per_block": run.workload.events_per_block,
        "block_range": run.block_range,
        "logs_per_request": run.logs_per_request,
        "log_json_bytes": round(run.log_json_bytes, 1),
        "hold_all_mb_per_10k_events": round(run.hold_all_mb_per_10k, 2),
        "flat_below_mb_per_10k_events": round(FLAT_FRACTION * run.hold_all_mb_per_10k, 2),
        "limit_mb": run.limit_mb,
        "baseline": BASELINE if any(s.key == BASELINE for s in run.series) else None,
        "environment": environment(),
        "paths": [{
            "key": entry.key,
            "rows": [{"events": s.events, "peak_rss_mb": round(s.peak_mb, 1),
                      "rss_after_import_mb": round(s.after_import_mb, 1),
                      "seconds": round(s.seconds, 2)} for s in entry.samples],
            **_verdict(run, entry),
        } for entry in run.series],
    }


def _flat_word(flat: bool | None) -> str:
    if flat is None:
        return "flatness not judged (one size, or a size below one response's worth of logs)"
    return "flat" if flat else "NOT flat"


def render_table(run: RssRun, console: Console) -> None:
    table = Table(title=(f"Peak RSS of a fresh replay process ({run.block_range} blocks = "
                         f"{run.block_range * run.workload.events_per_block:,} logs per "
                         "eth_getLogs)"))
    table.add_column("events", justify="right")
    for entry in run.series:
        table.add_column(f"{entry.key} MB", justify="right")
    for index, size in enumerate(run.sizes):
        table.add_row(f"{size:,}", *(f"{e.samples[index].peak_mb:.1f}" for e in run.series))
    verdicts = [_verdict(run, e) for e in run.series]
    table.add_row("MB / 10k events", *(
        "–" if v["slope_mb_per_10k_events"] is None else f"{v['slope_mb_per_10k_events']:+.2f}"
        for v in verdicts))
    console.print(table)
    console.print(f"one log is {run.log_json_bytes:,.0f} bytes of JSON: holding every event "
                  f"would add {run.hold_all_mb_per_10k:.1f} MB per 10k events; flat means "
                  f"< {FLAT_FRACTION * run.hold_all_mb_per_10k:.1f}. Limit at the largest size: "
                  f"{run.limit_mb:.0f} MB.")
    for entry, verdict in zip(run.series, verdicts, strict=True):
        console.print(f"{entry.key}: peak {verdict['peak_mb_at_largest']} MB "
                      f"({'within' if verdict['within_limit'] else 'OVER'} the limit), "
                      f"{_flat_word(verdict['flat'])}")


# -- CLI --------------------------------------------------------------------------------------


def _sizes(text: str) -> list[int]:
    try:
        values = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of "
                                         "whole numbers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every size must be at least 1")
    return sorted(set(values))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.rss",
        description="Peak RSS of replaying chains of growing size, each in a "
                    "fresh process, for the listener's path and web3 batched.")
    parser.add_argument("--events", type=_sizes, default=[25_000, 50_000, 100_000],
                        help="comma-separated sizes (default 25000,50000,100000)")
    add_workload_options(parser)
    add_subset_option(parser, "--paths", PATH_KEYS)
    parser.add_argument("--limit-mb", type=float, default=LIMIT_MB,
                        help="peak RSS allowed at the largest size (default 150)")
    add_output_options(parser,
                       workdir_help="where anvil's log and the SQLite files go (default: temp dir)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args.child)
    paths = parse_subset(parser, "--paths", args.paths, PATH_KEYS)
    console = report_console(args.json, width=120)
    try:
        run = run_rss(sizes=args.events, events_per_block=args.events_per_block,
                      block_range=args.block_range, paths=paths, limit_mb=args.limit_mb,
                      workdir=args.workdir, say=lambda message: console.log(message))
    except (RssBenchError, UserError, RuntimeError, OSError) as exc:
        console.print(f"rss bench failed: {exc}", style="red", markup=False)
        return 1
    render_table(run, console)
    if args.json:
        print_json(to_json(run, command_line("python -m bench.rss", argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
