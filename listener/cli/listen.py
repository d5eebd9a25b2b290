"""``blockhost listen``: the daemon (systemd's ExecStart)."""

from __future__ import annotations

import argparse

from listener.cli.parser import config_from


def run(args: argparse.Namespace) -> int:
    from functools import partial

    from listener.ops.doctor.startup import checked_for_start, require_markers_migrated
    from listener.ops.snippet_placement import limit_placement_to_snippet_readers
    from listener.runtime.daemon import Daemon

    config = limit_placement_to_snippet_readers(checked_for_start(config_from(args)))
    return Daemon(config, start_checks=[partial(require_markers_migrated, config)]).run()
