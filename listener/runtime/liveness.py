"""systemd notifications and the watchdog: liveness, not health.

The chain loop feeds the watchdog between its phases whether they succeeded or not, and
while it idles: an RPC or Proxmox outage shows as a red ``/healthz``, never as a restart
(a restart would SIGABRT workers mid-clone). Only a loop that stops turning lets
``WatchdogSec`` run out, so ``WatchdogSec`` must outlast the longest single blocking call a
phase can make; :func:`longest_blocking_call` works it out from the clients' settings below
and a test holds the unit file to it. In an outage a phase ends at its first failed call.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable

import structlog

from provisioner.storage.sqlite_db import BUSY_TIMEOUT_MS

log = structlog.get_logger(__name__)

#: The daemon's RpcClient: seconds to connect and, separately, to wait for each read.
RPC_TIMEOUT = 20.0
RPC_ATTEMPTS = 6
RPC_BACKOFF_INITIAL = 0.1
RPC_BACKOFF_MAX = 5.0
#: tenacity's default jitter (``wait_exponential_jitter``), added to every backoff sleep.
RPC_BACKOFF_JITTER = 1.0
#: An attempt re-checks the chain id after a lost connection before the call itself.
RPC_POSTS_PER_ATTEMPT = 2
#: The minter's web3 HTTPProvider (connect and read timeout, as above).
WEB3_TIMEOUT = 30.0
#: The longest the loop idles between two feeds, whatever ``chain.poll_interval`` is.
FEED_EVERY = 10.0


def sd_notify(message: str) -> None:
    """Tell systemd about readiness / liveness (no-op outside a Type=notify unit)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(address)
            sock.sendall(message.encode())
        except OSError:
            log.warning("systemd.notify_failed")


def feed_watchdog() -> None:
    """The loop is turning (sent whatever the last phase's outcome)."""
    sd_notify("WATCHDOG=1")


def pause(wait: Callable[[float], bool], seconds: float, *, stop: threading.Event) -> None:
    """Wait up to ``seconds`` with ``wait`` (True: woken early), feeding the watchdog at
    least every :data:`FEED_EVERY` seconds, so a long poll interval is no missed feed."""
    deadline = time.monotonic() + seconds
    while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
        if wait(min(left, FEED_EVERY)):
            return
        feed_watchdog()


def rpc_call_bound(*, timeout: float = RPC_TIMEOUT, attempts: int = RPC_ATTEMPTS,
                   backoff_initial: float = RPC_BACKOFF_INITIAL,
                   backoff_max: float = RPC_BACKOFF_MAX) -> float:
    """Longest one RpcClient call can block: every attempt's POSTs may each wait ``timeout``
    to connect and ``timeout`` for the reply, with tenacity's sleeps in between."""
    sleeps = sum(min(backoff_initial * 2.0 ** n + RPC_BACKOFF_JITTER, backoff_max)
                 for n in range(attempts - 1))
    return attempts * RPC_POSTS_PER_ATTEMPT * 2 * timeout + sleeps


def web3_call_bound(*, retries: int, backoff_factor: float,
                    timeout: float = WEB3_TIMEOUT) -> float:
    """Longest one web3 HTTPProvider request can block (its own retry loop)."""
    return retries * 2 * timeout + sum(backoff_factor * 2.0 ** n for n in range(retries - 1))


def longest_blocking_call(*, web3_retries: int, web3_backoff_factor: float) -> float:
    """The longest single call of the chain loop: RPC, the minter's web3, an SQLite wait
    or one idle slice. (A server that trickles a byte just inside every timeout can hold a
    call longer; the watchdog then restarts a loop that is stuck on it.)"""
    return max(rpc_call_bound(),
               web3_call_bound(retries=web3_retries, backoff_factor=web3_backoff_factor),
               BUSY_TIMEOUT_MS / 1000, FEED_EVERY)
