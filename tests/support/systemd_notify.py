"""systemd's side of ``Type=notify`` for tests: a notify socket the test binds, and the real
daemon started as its own process against it (shared by the watchdog and lock tests)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from tests.support.paths import REPO_ROOT


class NotifySocket:
    """A unix datagram socket in the abstract namespace (no path length limit, no file)."""

    def __init__(self) -> None:
        self.name = f"blockhost-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name)

    @property
    def address(self) -> str:
        """The value of NOTIFY_SOCKET (``@`` = abstract, as systemd writes it)."""
        return "@" + self.name

    def receive(self, timeout: float) -> str | None:
        """The next message, or None if none came within ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(4096).decode()
        except TimeoutError:
            return None

    def wait_for(self, message: str, process: subprocess.Popen[bytes], *,
                 timeout: float = 120.0) -> bool:
        """True once ``message`` arrives; False if ``process`` exits first. Raises
        AssertionError if neither happens within ``timeout`` (a hang, not a duration)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.receive(0.2) == message:
                return True
            if process.poll() is not None:
                return False
        raise AssertionError(f"neither {message} nor an exit within {timeout:.0f}s")

    def close(self) -> None:
        self.sock.close()


def start_listener(config_path: Path, notify: NotifySocket, logs: Path) -> subprocess.Popen[bytes]:
    """``blockhost listen`` as systemd would run it: logs (stdout) to ``logs``, the one-line
    error (stderr) to ``logs`` + ``.err``."""
    env = dict(os.environ, NOTIFY_SOCKET=notify.address, WATCHDOG_USEC="600000000")
    with open(logs, "ab") as out, open(f"{logs}.err", "ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "listener.cli", "--config", str(config_path), "listen"],
            stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=REPO_ROOT)
