"""Present a bench run: a rich table for people, a JSON document for scripts.

Only medians and ratios within the same run are reported: on shared 2-core machines an
absolute number from one run says little, the ratio between paths measured side by side does.
"""

from __future__ import annotations

import os
import platform
from importlib.metadata import version
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.paths import BASELINE
from bench.runner import BenchRun, PathResult


def _baseline(run: BenchRun) -> PathResult | None:
    return next((r for r in run.results if r.scenario.key == BASELINE), None)


#: (name, numerator path, denominator path): the ratios issue 7's target is stated in.
HEADLINE_RATIOS = (
    ("ours_vs_web3_batched", "ours-journal", "web3-batched"),
    ("ours_vs_eth_abi_executemany", "ours-journal", "eth-abi-executemany"),
    ("ceiling_over_ours", "ceiling", "ours-journal"),
    ("ceiling_orjson_over_ours", "ceiling-orjson", "ours-journal"),
)


def headline(run: BenchRun) -> dict[str, float]:
    """The ratios of medians measured in this run, for the paths that ran."""
    medians = {r.scenario.key: r.median_rate for r in run.results}
    return {name: round(medians[top] / medians[bottom], 2)
            for name, top, bottom in HEADLINE_RATIOS if top in medians and bottom in medians}


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "web3": version("web3"),
        "eth_abi": version("eth-abi"),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }


def to_json(run: BenchRun, command: str) -> dict[str, Any]:
    """A stable, machine-readable summary (rates in events/s)."""
    base = _baseline(run)
    paths = []
    for result in run.results:
        rates = result.rates()
        paths.append({
            "key": result.scenario.key,
            "label": result.scenario.label,
            "events": result.events,
            "median_events_per_s": round(result.median_rate, 1),
            "min_events_per_s": round(min(rates), 1),
            "max_events_per_s": round(max(rates), 1),
            "seconds": [round(s, 4) for s in result.seconds],
            "ratio_vs_baseline": (round(result.median_rate / base.median_rate, 2)
                                  if base is not None else None),
        })
    w = run.workload
    return {
        "command": command,
        "events": w.events,
        "blocks": w.blocks,
        "events_per_block": w.events_per_block,
        "block_range": run.block_range,
        "repeat": run.repeat,
        "baseline": BASELINE if base is not None else None,
        "produce_seconds": round(w.seconds, 2),
        "peak_rss_mb_all_paths": round(run.peak_rss_mb, 1),
        "ratios": headline(run),
        "environment": environment(),
        "paths": paths,
    }


def render_table(run: BenchRun, console: Console) -> None:
    base = _baseline(run)
    w = run.workload
    table = Table(title=(f"Replay of {w.events:,} SubscriptionCreated events "
                         f"({w.blocks:,} blocks, getLogs range {run.block_range} blocks, "
                         f"median of {run.repeat})"))
    table.add_column("path")
    table.add_column("what it does")
    table.add_column("events/s (median)", justify="right")
    table.add_column("min – max", justify="right")
    table.add_column("vs web3 naive", justify="right")
    for result in run.results:
        rates = result.rates()
        ratio = f"{result.median_rate / base.median_rate:.1f}x" if base is not None else "–"
        table.add_row(result.scenario.key, result.scenario.label,
                      f"{result.median_rate:,.0f}", f"{min(rates):,.0f} – {max(rates):,.0f}",
                      ratio)
    console.print(table)
    ratios = headline(run)
    if ratios:
        console.print("ratios of medians: " + ", ".join(f"{k} {v}x" for k, v in ratios.items()))
    env = environment()
    console.print(f"python {env['python']}, web3 {env['web3']}, eth-abi {env['eth_abi']}, "
                  f"{env['cpus']} CPUs (shared with anvil); events produced in "
                  f"{w.seconds:.1f} s; peak RSS of the bench process {run.peak_rss_mb:.0f} MB")
