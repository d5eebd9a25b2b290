"""``blockhost demo``: end to end on a local anvil and the PVE simulator."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    # devkit is development tooling: loaded only when the demo runs (tests/architecture/test_layering.py)
    from listener.devkit.demo import run_demo

    return run_demo(args.workdir)
