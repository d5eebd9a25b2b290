"""Start a local anvil chain for the demo and the test-suite.

anvil is launched directly (not through the npm wrapper script) so that SIGKILL reaches the
real process, on 127.0.0.1 with ``--port 0``; its stdout goes to a log FILE (an undrained pipe
can block it) and the chosen port is read back from that file.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from listener.errors import UserError
from provisioner.processes import terminate

_LISTENING = re.compile(r"Listening on 127\.0\.0\.1:(\d+)")

#: anvil's first default development account (well known, funded, never for real money).
DEV_PRIVATE_KEYS = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
)

#: Anvil's tenth default account, used only to hand out test stablecoin: never the operator's
#: (the listener signs with that one, and two senders on one account race for nonces).
FAUCET_PRIVATE_KEY = "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6"


def _npm_anvil() -> str | None:
    """The pinned npm anvil in the nearest ``node_modules`` above this file or the working
    directory (as node resolves packages): a source checkout, or a venv made inside one."""
    cwd = Path.cwd().resolve()
    for base in (*Path(__file__).resolve().parents, cwd, *cwd.parents):
        found = sorted(glob.glob(str(base / "node_modules/@foundry-rs/anvil-*/bin/anvil")))
        if found:
            return found[0]
    return None


def find_anvil() -> str:
    """Locate the anvil binary: $BLOCKHOST_ANVIL, the pinned npm package, then PATH."""
    explicit = os.environ.get("BLOCKHOST_ANVIL")
    if explicit:
        return explicit
    found = _npm_anvil()
    if found:
        return found
    on_path = shutil.which("anvil")
    if on_path:
        return on_path
    raise UserError(
        "anvil not found: the pinned @foundry-rs/anvil npm package is not installed; "
        "run `make setup` (npm ci) or set BLOCKHOST_ANVIL to an anvil binary"
    )


@dataclass
class Anvil:
    """A running anvil process and where to reach it."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Terminate anvil and reap it; idempotent."""
        terminate(self.process)


def start_anvil(
    workdir: Path,
    *,
    chain_id: int = 31337,
    block_time: float | None = None,
    extra_args: tuple[str, ...] = (),
    timeout: float = 20.0,
) -> Anvil:
    """Start anvil on loopback with an OS-chosen port and wait until it listens."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"anvil-{os.getpid()}-{time.monotonic_ns()}.log"
    argv = [find_anvil(), "--host", "127.0.0.1", "--port", "0", "--chain-id", str(chain_id)]
    if block_time is not None:
        argv += ["--block-time", str(block_time)]
    argv += list(extra_args)
    log = open(log_path, "wb")  # noqa: SIM115 - handed to the child, closed below
    try:
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    finally:
        log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = _LISTENING.search(log_path.read_text(errors="replace"))
        if match:
            return Anvil(process=process, port=int(match.group(1)), log_path=log_path)
        if process.poll() is not None:
            break
        time.sleep(0.02)
    if process.poll() is None:
        process.kill()
        process.wait()
    tail = log_path.read_text(errors="replace")[-500:]
    raise UserError(f"anvil did not start within {timeout:.0f}s; its log ends with: {tail!r}")
