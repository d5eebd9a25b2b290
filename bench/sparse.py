"""``python -m bench.sparse``: seconds to catch up over a long run of empty blocks.

A synthetic node (:mod:`bench.synthchain`, its own process) serves N empty blocks and refuses
``eth_getLogs`` ranges wider than ``--max-range`` blocks, as hosted providers do. In the same
run, interleaved ``--repeat`` times, two followers catch up from block 0 to the head:

* ``ours``: the listener's real scan path, ``listener.chain.scanner.scan_once`` in a loop with one
  ``LogPrefetcher`` and its ``RangeController`` and a ``WalCheckpointer`` (as the daemon
  runs it), a real :class:`Store` on disk,
  confirmations 0 and ``chain.max_block_range`` far above the provider's cap, so the
  controller must learn the cap from the refusals;
* ``web3-fixed``: a straightforward web3.py follower, ``w3.eth.get_logs`` in fixed 2,000-block
  chunks (the listener's default ``max_block_range``), one SQLite cursor commit per chunk.

Requests are counted by the node. Exit codes: 0 done, 1 a follower did not reach the head or
the node could not be started, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from rich.console import Console, JustifyMethod
from rich.table import Table
from web3 import Web3

from bench.cli_args import (
    add_output_options,
    command_line,
    positive_int,
    print_json,
    report_console,
)
from bench.report import environment
from bench.synthchain import DEFAULT_CHAIN_ID, ERROR_STYLES
from listener.chain.journal import Store
from listener.chain.prefetch import LogPrefetcher
from listener.chain.rpc import RpcClient
from listener.chain.scanner import Outcome, scan_once
from listener.config import ChainConfig
from listener.runtime.logging_setup import configure as configure_logging
from provisioner.processes import terminate
from provisioner.storage.sqlite_db import connect
from provisioner.storage.wal_checkpoint import WalCheckpointer

#: Any address: the synthetic chain holds no logs at all.
CONTRACT = "0x00000000000000000000000000000000b10c4057"
BASELINE = "web3-fixed"
REPO_ROOT = Path(__file__).resolve().parent.parent


class SparseBenchError(RuntimeError):
    """The node did not start, or a follower did not end at the head."""


@dataclass(frozen=True)
class Catchup:
    """One follower's run from block 0 to the head."""

    seconds: float
    cursor: int
    steps: int
    stats: dict[str, Any]
    final_span: int | None = None


@dataclass
class PathResult:
    """All repetitions of one follower."""

    key: str
    label: str
    runs: list[Catchup] = field(default_factory=list)

    @property
    def median_seconds(self) -> float:
        return statistics.median(r.seconds for r in self.runs)


# -- the synthetic node -----------------------------------------------------------------------


class SynthNode:
    """A running ``bench.synthchain`` process."""

    def __init__(self, process: subprocess.Popen[bytes], port: int) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}"

    def stats(self) -> dict[str, Any]:
        response = requests.get(self.url + "/stats", timeout=10)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def stop(self) -> None:
        terminate(self.process)


@contextmanager
def synth_node(workdir: Path, *, blocks: int, max_range: int, error_style: str,
               latency_ms: float = 0.0, timeout: float = 20.0) -> Iterator[SynthNode]:
    """Start the synthetic node as a child process; stop it on exit."""
    port_file = workdir / "synthchain.port"
    log_path = workdir / "synthchain.log"
    argv = [sys.executable, "-m", "bench.synthchain", "--blocks", str(blocks),
            "--max-range", str(max_range), "--error-style", error_style,
            "--latency-ms", str(latency_ms),
            "--port-file", str(port_file)]
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(argv, cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                                   stdout=log_file, stderr=subprocess.STDOUT)
    node: SynthNode | None = None
    try:
        deadline = time.monotonic() + timeout
        while node is None:
            if port_file.exists():
                node = SynthNode(process, int(port_file.read_text()))
            elif process.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-300:]
                raise SparseBenchError(f"the synthetic node did not start: {tail!r}")
            else:
                time.sleep(0.02)
        yield node
    finally:
        if node is not None:
            node.stop()
        elif process.poll() is None:
            process.kill()
            process.wait(timeout=5)


def _delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    calls = {k: v - before["calls"].get(k, 0) for k, v in after["calls"].items()}
    return {"http_requests": after["http_requests"] - before["http_requests"],
            "calls": {k: v for k, v in sorted(calls.items()) if v},
            "refused": after["refused"] - before["refused"]}


# -- the followers ----------------------------------------------------------------------------


def follow_ours(url: str, db: Path, *, max_block_range: int) -> tuple[int, int, int | None]:
    """The listener's scan path until the cursor is at the head: (cursor, steps, span)."""
    chain = ChainConfig(rpc_urls=[url], chain_id=DEFAULT_CHAIN_ID, subscription_contract=CONTRACT,
                        start_block=0, confirmations=0, max_block_range=max_block_range)
    rpc = RpcClient(chain.rpc_urls, expected_chain_id=chain.chain_id)
    # as the daemon runs it: next range fetched ahead, WAL checkpointed in the background
    prefetch = LogPrefetcher.for_listener(rpc, address=CONTRACT,
                                          max_block_range=chain.max_block_range)
    store = Store.open(db)
    try:
        head = rpc.block_number()
        steps = 0
        with WalCheckpointer(db):
            while True:
                result = scan_once(rpc, store, chain, prefetch=prefetch)
                steps += 1
                cursor = store.chain_state().cursor
                if cursor is not None and cursor >= head:
                    return cursor, steps, prefetch.controller.size
                if result.outcome in (Outcome.HALTED, Outcome.NOTHING_NEW, Outcome.REORGED):
                    raise SparseBenchError(f"ours stopped at cursor {cursor} of {head}: "
                                           f"{result.outcome.value}")
    finally:
        prefetch.discard()
        store.close()


def follow_web3(url: str, db: Path, *, chunk: int) -> tuple[int, int, int | None]:
    """A plain web3.py follower: fixed ``chunk``-block getLogs, one cursor commit per chunk."""
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 60}))
    address = Web3.to_checksum_address(CONTRACT)
    conn = connect(db)  # the listener's connection settings, so the commits cost the same
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS cursor (id INTEGER PRIMARY KEY, block INTEGER)")
        head = w3.eth.block_number
        start, steps, cursor = 0, 0, -1
        while start <= head:
            end = min(head, start + chunk - 1)
            w3.eth.get_logs({"address": address, "fromBlock": start, "toBlock": end})
            conn.execute("BEGIN")
            conn.execute("INSERT OR REPLACE INTO cursor (id, block) VALUES (1, ?)", (end,))
            conn.execute("COMMIT")
            steps += 1
            cursor = end
            start = end + 1
        return cursor, steps, chunk
    finally:
        conn.close()


@dataclass(frozen=True)
class Follower:
    key: str
    label: str
    run: Callable[[str, Path], tuple[int, int, int | None]]


def followers(max_block_range: int, chunk: int) -> list[Follower]:
    return [
        Follower("ours", f"scan_once + LogPrefetcher + Store (max_block_range "
                         f"{max_block_range:,}, confirmations 0)",
                 lambda url, db: follow_ours(url, db, max_block_range=max_block_range)),
        Follower(BASELINE, f"web3 get_logs, fixed {chunk:,}-block chunks, cursor commit "
                           "per chunk",
                 lambda url, db: follow_web3(url, db, chunk=chunk)),
    ]


# -- the run ----------------------------------------------------------------------------------


@dataclass
class SparseRun:
    blocks: int
    max_range: int
    error_style: str
    repeat: int
    max_block_range: int
    chunk: int
    results: list[PathResult]
    latency_ms: float = 0.0


def run_sparse(*, blocks: int, max_range: int, error_style: str, repeat: int,
               max_block_range: int, chunk: int, latency_ms: float = 0.0,
               workdir: Path | None = None,
               say: Callable[[str], None] = lambda _m: None) -> SparseRun:
    """Start the node, let every follower catch up ``repeat`` times (rotating the order)."""
    paths = followers(max_block_range, chunk)
    results = [PathResult(p.key, p.label) for p in paths]
    with tempfile.TemporaryDirectory(prefix="blockhost-sparse-", dir=workdir) as tmp:
        base = Path(tmp)
        with synth_node(base, blocks=blocks, max_range=max_range, error_style=error_style,
                        latency_ms=latency_ms) as node:
            for rep in range(repeat):
                shift = rep % len(paths)
                order = list(zip(paths, results, strict=True))
                for follower, result in order[shift:] + order[:shift]:
                    db = base / f"{follower.key}-{rep}.sqlite3"
                    before = node.stats()
                    started = time.perf_counter()
                    cursor, steps, span = follower.run(node.url, db)
                    seconds = time.perf_counter() - started
                    stats = _delta(before, node.stats())
                    if cursor != blocks:
                        raise SparseBenchError(
                            f"{follower.key} ended at block {cursor}, the head is {blocks}")
                    result.runs.append(Catchup(seconds, cursor, steps, stats, span))
                    say(f"run {rep + 1}/{repeat} {follower.key}: {seconds:.2f} s, "
                        f"{stats['http_requests']} HTTP requests")
    return SparseRun(blocks, max_range, error_style, repeat, max_block_range, chunk, results,
                     latency_ms)


# -- presentation -----------------------------------------------------------------------------


def _baseline(run: SparseRun) -> PathResult:
    return next(r for r in run.results if r.key == BASELINE)


def to_json(run: SparseRun, command: str) -> dict[str, Any]:
    base = _baseline(run)
    paths = []
    for result in run.results:
        last = result.runs[-1]
        paths.append({
            "key": result.key,
            "label": result.label,
            "seconds": [round(r.seconds, 4) for r in result.runs],
            "median_seconds": round(result.median_seconds, 4),
            "blocks_per_s": round((run.blocks + 1) / result.median_seconds, 1),
            "cursor": last.cursor,
            "reached_head": all(r.cursor == run.blocks for r in result.runs),
            "steps": last.steps,
            "http_requests": last.stats["http_requests"],
            "calls": last.stats["calls"],
            "refused_get_logs": last.stats["refused"],
            "final_span": last.final_span,
            "speedup_vs_baseline": round(base.median_seconds / result.median_seconds, 2),
        })
    return {
        "command": command,
        "blocks": run.blocks,
        "head": run.blocks,
        "provider_max_range": run.max_range,
        "error_style": run.error_style,
        "latency_ms": run.latency_ms,
        "error_text": ERROR_STYLES[run.error_style][1].format(cap=run.max_range),
        "repeat": run.repeat,
        "baseline": BASELINE,
        "environment": environment(),
        "paths": paths,
    }


def render_table(run: SparseRun, console: Console) -> None:
    base = _baseline(run)
    table = Table(title=(f"Catch-up over {run.blocks:,} empty blocks (synthetic node, getLogs "
                         f"cap {run.max_range:,} blocks, +{run.latency_ms:g} ms per request, "
                         f"median of {run.repeat})"))
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("path", "left"), ("what it does", "left"), ("seconds (median)", "right"),
        ("min – max", "right"), ("blocks/s", "right"), ("HTTP requests", "right"),
        ("getLogs (refused)", "right"), ("speedup", "right"))
    for name, justify in columns:
        table.add_column(name, justify=justify)
    for result in run.results:
        seconds = [r.seconds for r in result.runs]
        last = result.runs[-1]
        table.add_row(result.key, result.label, f"{result.median_seconds:.2f}",
                      f"{min(seconds):.2f} – {max(seconds):.2f}",
                      f"{(run.blocks + 1) / result.median_seconds:,.0f}",
                      str(last.stats["http_requests"]),
                      f"{last.stats['calls'].get('eth_getLogs', 0)} ({last.stats['refused']})",
                      f"{base.median_seconds / result.median_seconds:.1f}x")
    console.print(table)


# -- CLI --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sparse",
        description="Seconds for the listener and a web3.py follower to catch up over N empty "
                    "blocks served by a synthetic node with a provider-style getLogs range cap.")
    parser.add_argument("--blocks", type=positive_int, default=1_000_000,
                        help="head block of the synthetic chain (default 1000000)")
    parser.add_argument("--repeat", type=positive_int, default=3,
                        help="repetitions per follower; the median is reported (default 3)")
    parser.add_argument("--max-range", type=positive_int, default=10_000,
                        help="the node's eth_getLogs range cap in blocks (default 10000)")
    parser.add_argument("--error-style", choices=sorted(ERROR_STYLES), default="stated",
                        help="refusal text: 'stated' names the cap, 'bare' does not")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="delay the node adds to every reply, in ms, standing in for a "
                             "hosted provider's round trip (default 0: loopback)")
    parser.add_argument("--max-block-range", type=positive_int, default=100_000,
                        help="the listener's chain.max_block_range (default 100000)")
    parser.add_argument("--chunk", type=positive_int, default=2_000,
                        help="the web3 follower's fixed range (default 2000)")
    add_output_options(
        parser, workdir_help="where the SQLite files and the node's log go (default: temp dir)")
    return parser


def _quiet_logs() -> None:
    """Per-step INFO lines would interleave with the report; warnings still show."""
    configure_logging(sys.stderr, level=logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.latency_ms < 0:
        parser.error("--latency-ms must be at least 0")
    if args.chunk > args.max_range:
        parser.error(f"--chunk {args.chunk} is above the node's --max-range "
                             f"{args.max_range}: the baseline would only see refusals")
    _quiet_logs()
    console = report_console(args.json, width=140)
    try:
        run = run_sparse(blocks=args.blocks, max_range=args.max_range,
                         error_style=args.error_style, repeat=args.repeat,
                         max_block_range=args.max_block_range, chunk=args.chunk,
                         latency_ms=args.latency_ms,
                         workdir=args.workdir, say=lambda message: console.log(message))
    except (SparseBenchError, OSError, requests.RequestException) as exc:
        console.print(f"sparse bench failed: {exc}", style="red", markup=False)
        return 1
    except Exception as exc:  # noqa: BLE001 - a follower's RPC/web3 failure: report, exit 1
        console.print(f"sparse bench failed: {type(exc).__name__}: {exc}", style="red",
                      markup=False)
        return 1
    render_table(run, console)
    if args.json:
        print_json(to_json(run, command_line("python -m bench.sparse", argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
