"""Crash a real process at a chosen moment (shared by the crash tests)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable


def sigkill_when(proc: subprocess.Popen[bytes], ready: Callable[[], bool], *, what: str,
                 output: Callable[[], str], timeout: float = 30.0) -> None:
    """Poll ``ready()`` while ``proc`` runs, then SIGKILL it there. Fails (with the
    process's ``output()``) if it exits first or ``what`` never happens; the process is
    reaped whatever happens."""
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None, output()
            if time.monotonic() >= deadline:
                raise AssertionError(f"{what} never happened")
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
