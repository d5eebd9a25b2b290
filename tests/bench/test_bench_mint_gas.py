"""The mint-gas bench runs small on anvil and reports every figure for every size: the figures
themselves go in bench/README.md and docs/nft-page.md, never into an assertion."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.paths import REPO_ROOT

FIELDS = {"html_bytes", "base64_bytes", "set_default_gas", "set_default_txs",
          "largest_tx_gas", "mint_inline_gas",
          "mint_default_gas", "token_uri_call_gas", "replace_default_gas", "turn_off_gas",
          "break_even_mints"}


def test_mint_gas_bench_reports_each_size() -> None:
    proc = subprocess.run([sys.executable, "-m", "bench.mint_gas", "--sizes", "1,2,13", "--json"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert doc["command"] == "python -m bench.mint_gas --sizes 1,2,13 --json"
    assert doc["block_gas_limit"] > 0 and doc["mint_empty_no_default_gas"] > 0
    assert [row["html_bytes"] for row in doc["pages"]] == [1024, 2048, 13 * 1024]
    *inline, parts = doc["pages"]
    # 13 KiB: stored in three parts; no longer minted inline (over one transaction's gas).
    assert parts["set_default_txs"] == 3 and parts["mint_inline_gas"] is None
    assert parts["set_default_gas"] > parts["largest_tx_gas"] > 0
    assert parts["break_even_mints"] is None
    for row in inline:
        assert set(row) == FIELDS and row["set_default_txs"] == 1
        assert row["largest_tx_gas"] == row["set_default_gas"]
        assert row["base64_bytes"] == 4 * ((row["html_bytes"] + 2) // 3)
        # Relations that hold by construction: a page stored per mint costs more than none,
        # and a mint with an empty page costs the same whether or not a default is set.
        assert row["mint_inline_gas"] > row["mint_default_gas"]
        assert row["set_default_gas"] > row["replace_default_gas"] > 0  # fresh slots cost more
        assert row["mint_default_gas"] == doc["mint_empty_no_default_gas"]
        assert isinstance(row["break_even_mints"], int) and row["break_even_mints"] >= 1
    assert set(parts) == FIELDS
    small, large = inline
    assert parts["set_default_gas"] > large["set_default_gas"] > small["set_default_gas"]
    assert parts["token_uri_call_gas"] > large["token_uri_call_gas"] > \
        small["token_uri_call_gas"]
    assert "set default (once)" in proc.stderr  # the table, beside the JSON


def test_mint_gas_bench_rejects_bad_sizes() -> None:
    for sizes in ("0", "abc", "65"):
        proc = subprocess.run([sys.executable, "-m", "bench.mint_gas", "--sizes", sizes],
                              cwd=REPO_ROOT, capture_output=True, text=True, check=False)
        assert proc.returncode == 2 and "--sizes" in proc.stderr, sizes
