"""The reconcile tests' world: a reconciler on the real simulator (tests/support)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.reconcile_world import World


@pytest.fixture
def world(tmp_path: Path, pvesim: Any) -> Iterator[World]:
    w = World(tmp_path, pvesim)
    try:
        yield w
    finally:
        w.store.close()
