"""Where the tests find the repository, wherever their file sits in tests/."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
#: shared/ (the spec and the PVE schema subset) sits beside the repository root
SHARED_DIR = REPO_ROOT.parent / "shared"
