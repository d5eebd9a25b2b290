"""The committed pages are exactly what web/build.mjs makes from the sources and the npm lock."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from listener.ops.contracts import PAGE_BUDGET_BYTES
from listener.ops.web import PAGES, pages_dir
from tests.support.paths import REPO_ROOT

BUILD = REPO_ROOT / "web" / "build.mjs"

#: The NFT page is stored on chain once per contract: `contracts set-page`'s budget in bytes.
NFT_PAGE_BUDGET = PAGE_BUDGET_BYTES


def _node() -> str:
    node = shutil.which("node")
    if node is None or not (REPO_ROOT / "node_modules" / "esbuild").is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail("node or node_modules/esbuild is missing: run `make setup`")
        pytest.skip("node or node_modules/esbuild is missing: run `make setup`")
    return node


def test_rebuild_reproduces_committed_pages(tmp_path: Path) -> None:
    out = tmp_path / "web"
    result = subprocess.run([_node(), str(BUILD), "--out", str(out)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(PAGES)
    for name in PAGES:
        assert (out / name).read_bytes() == (pages_dir() / name).read_bytes(), (
            f"{name} differs from a fresh build: run `make web` and commit the result")


def test_pages_are_self_contained() -> None:
    for name in PAGES:
        html = (pages_dir() / name).read_text()
        assert "<!--STYLE-->" not in html and "<!--SCRIPT-->" not in html
        # no external script, style sheet, image or font: everything is inlined
        assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", html, re.I), name
        # the only URLs in the bundles are inside library error texts, never fetched
        hosts = set(re.findall(r"https?://([a-z0-9.-]+)", html))
        assert hosts <= {"github.com", "www.w3.org"}, (name, hosts)
        assert "Content-Security-Policy" in html


def test_nft_page_fits_its_budget() -> None:
    size = (pages_dir() / "nft-credentials.html").stat().st_size
    assert size <= NFT_PAGE_BUDGET, f"nft-credentials.html is {size} bytes"


def test_build_fails_with_one_clear_line_on_bad_arguments() -> None:
    result = subprocess.run([_node(), str(BUILD), "--bogus"], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "unknown argument" in result.stderr
