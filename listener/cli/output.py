"""How the CLI speaks: results on stdout, each failure as one line on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping

from listener.errors import BlockhostError
from provisioner.errors import ProvisionerError

PROG = "blockhost"


def print_json(doc: Mapping[str, object], *, sort_keys: bool = True) -> None:
    """One JSON object on one line of stdout."""
    print(json.dumps(doc, sort_keys=sort_keys))


def print_error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


def failure_line(exc: BlockhostError | ProvisionerError | OSError) -> str:
    """What a failure we expect says to the user (what, why, what to do), never a traceback."""
    if isinstance(exc, BlockhostError):
        return str(exc)
    if isinstance(exc, ProvisionerError):
        return f"Proxmox: {exc}"
    return (f"{type(exc).__name__}: {exc}; check the addresses and that the service is "
            "running")
