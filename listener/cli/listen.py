"""``blockhost listen``: the daemon (systemd's ExecStart)."""

from __future__ import annotations

import argparse

from listener.cli.parser import config_from


def run(args: argparse.Namespace) -> int:
    from listener.ops.doctor.startup import checked_for_start
    from listener.ops.snippet_placement import limit_placement_to_snippet_readers
    from listener.runtime.daemon import Daemon

    return Daemon(limit_placement_to_snippet_readers(checked_for_start(config_from(args)))).run()
