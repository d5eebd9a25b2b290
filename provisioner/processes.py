"""Stopping child processes we started (anvil, the simulator, listeners in tests/benches)."""

from __future__ import annotations

import signal
import subprocess


def terminate(process: subprocess.Popen[bytes], *, grace: float = 5.0) -> int | None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; reaps the child. Idempotent.
    Returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=grace)
    return process.returncode
