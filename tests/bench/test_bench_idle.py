"""The idle bench runs end to end (short phases) and shows a waiting subscription adds no
journal rows: the figures themselves go in bench/README.md, never into an assertion."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.paths import REPO_ROOT

pytestmark = pytest.mark.slow


def test_idle_bench_reports_both_phases() -> None:
    proc = subprocess.run([sys.executable, "-m", "bench.idle", "--seconds", "4", "--json"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    idle, waiting = doc["phases"]["idle"], doc["phases"]["waiting"]
    assert idle["calls_per_minute"] > 0 and waiting["calls_per_minute"] > 0
    assert "eth_getLogs" in idle["calls_by_method"]
    assert "steps" not in waiting["rows_by_table"]  # a wait repeats no row
    assert doc["ratios"]["calls_waiting_over_idle"] is not None


def test_idle_bench_rejects_a_bad_duration() -> None:
    proc = subprocess.run([sys.executable, "-m", "bench.idle", "--seconds", "0"],
                          cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "--seconds" in proc.stderr
