"""Run the scenarios K times against one chain and keep per-run timings.

Repetitions interleave the paths (rotating the order each time) so that a noisy neighbour on
these shared 2-core machines hurts every path alike; the report uses medians and ratios
within the same run only. The first run of each path is checked: every SQL path must journal
exactly the same rows, and every path must see all events.
"""

from __future__ import annotations

import hashlib
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.emitter import Workload, produce
from bench.paths import PATHS, Replay, Scenario, iter_journaled_rows
from listener.devkit.devchain import start_anvil


class BenchError(RuntimeError):
    """A path journaled something other than the events on chain."""


@dataclass
class PathResult:
    """Timings of one path over all repetitions."""

    scenario: Scenario
    seconds: list[float] = field(default_factory=list)
    events: int = 0
    digest: str | None = None

    def rates(self) -> list[float]:
        return [self.events / s for s in self.seconds if s > 0]

    @property
    def median_rate(self) -> float:
        return statistics.median(self.rates())


@dataclass
class BenchRun:
    """Everything the report needs."""

    workload: Workload
    block_range: int
    repeat: int
    results: list[PathResult]
    peak_rss_mb: float


def rows_digest(db: Path) -> str:
    """A fingerprint of a path's journaled rows (equal fingerprints = identical rows)."""
    digest = hashlib.sha256()
    for row in iter_journaled_rows(db):
        digest.update(repr(row).encode())
    return digest.hexdigest()


def run_bench(
    *,
    events: int,
    repeat: int,
    events_per_block: int,
    block_range: int,
    scenarios: Sequence[Scenario] = PATHS,
    workdir: Path | None = None,
    say: Callable[[str], None] = lambda _m: None,
) -> BenchRun:
    """Start anvil, produce the events, replay them with every scenario ``repeat`` times."""
    with tempfile.TemporaryDirectory(prefix="blockhost-bench-", dir=workdir) as tmp:
        base = Path(tmp)
        anvil = start_anvil(base / "anvil")
        try:
            say(f"producing {events:,} SubscriptionCreated events on anvil …")
            workload = produce(anvil, events, events_per_block=events_per_block)
            say(f"produced {events:,} events in {workload.blocks:,} blocks "
                f"in {workload.seconds:.1f} s")
            replay = Replay(anvil.url, workload.address, workload.first_block,
                            workload.last_block, block_range)
            results = [PathResult(s) for s in scenarios]
            for rep in range(repeat):
                shift = rep % len(results)
                for result in results[shift:] + results[:shift]:
                    _run_once(result, replay, base / f"{result.scenario.key}-{rep}.sqlite3",
                              expected=events, check=rep == 0)
                    say(f"run {rep + 1}/{repeat} {result.scenario.key}: "
                        f"{result.events / result.seconds[-1]:,.0f} events/s")
            _check_same_rows(results)
        finally:
            anvil.stop()
    return BenchRun(workload, block_range, repeat, results, _peak_rss_mb())


def _run_once(result: PathResult, replay: Replay, db: Path, *, expected: int,
              check: bool) -> None:
    started = time.perf_counter()
    count = result.scenario.run(replay, db)
    result.seconds.append(time.perf_counter() - started)
    if count != expected:
        raise BenchError(f"{result.scenario.key} handled {count} events, expected {expected}")
    result.events = count
    if check and result.scenario.writes_db:
        result.digest = rows_digest(db)
    db.unlink(missing_ok=True)
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)


def _check_same_rows(results: list[PathResult]) -> None:
    digests = {r.scenario.key: r.digest for r in results if r.digest is not None}
    if len(set(digests.values())) > 1:
        raise BenchError(f"paths journaled different rows: {digests}")


def _peak_rss_mb() -> float:
    """Peak RSS of this process over the whole run (all paths together)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
