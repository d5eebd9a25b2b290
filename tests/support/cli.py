"""`blockhost` as an operator runs it: the venv's entry point in its own process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.paths import REPO_ROOT

#: The venv's scripts (``blockhost`` and the seed's names).
BIN = Path(sys.executable).parent


def run_blockhost(config: Path, *args: str,
                  timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """``blockhost --config CONFIG ARGS``; its exit code and output, never raised on."""
    return subprocess.run([str(BIN / "blockhost"), "--config", str(config), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT,
                          check=False)
