"""``blockhost listen``: the daemon (systemd's ExecStart)."""

from __future__ import annotations

import argparse

from listener.cli.parser import config_from


def run(args: argparse.Namespace) -> int:
    from listener.runtime.daemon import Daemon

    return Daemon(config_from(args)).run()
