"""The start gate: a listener started during an outage waits it out instead of exiting.

A host that reboots during an hour-long RPC or Proxmox outage must not crash-loop under
systemd's ``Restart=`` (and never serve ``/healthz``). So the daemon says READY and serves
``/healthz`` first; then the gate runs the start-up steps that need the chain and Proxmox (the
chain id, the services, the start-up repair) until all of them succeed. A temporary failure
(see :mod:`listener.reconcile.failures`) turns ``/healthz`` red with what is awaited and is
tried again after a capped backoff, forever, feeding the watchdog; a permanent one (a wrong
chain id, a database of another deployment, a bad key) is raised at once: waiting cannot fix it.
Nothing is scanned, allocated, created or minted before the gate opens.
"""

from __future__ import annotations

import random
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

import structlog

from listener.reconcile.failures import Failure, classify
from listener.redact import redact
from listener.runtime import liveness
from listener.runtime.observability import HealthState
from provisioner.errors import ProvisionerError

log = structlog.get_logger(__name__)

#: Seconds before the first retry; doubled per failure up to :data:`MAX_DELAY`.
FIRST_DELAY = 1.0
#: The longest wait between two tries (an outage's end is noticed within about a minute).
MAX_DELAY = 60.0
#: Longest reason shown on /healthz and in the log.
REASON_CHARS = 200


class StartInterrupted(BaseException):
    """SIGTERM or SIGINT while the gate was closed: the start ends cleanly (exit 0).

    A BaseException, so no ``except Exception`` on the way (tenacity, adapters) swallows it:
    the signal must end a try that is blocked on an unanswering server, not wait for it."""


@dataclass(frozen=True)
class StartStep:
    """One start-up step; ``needs`` names what an outage of it is waiting for."""

    name: str
    needs: str
    run: Callable[[], object]


def backoff(failures: int, *, first: float = FIRST_DELAY, cap: float = MAX_DELAY) -> float:
    """Seconds to wait after ``failures`` failed tries in a row: doubling, capped, with up to
    10 % jitter so listeners restarted together do not knock in step."""
    base = min(cap, first * 2.0 ** max(0, failures - 1))
    return float(min(cap, base * (1.0 + random.uniform(0.0, 0.1))))


def awaited(step: StartStep, exc: BaseException) -> str:
    """What the failure waits for: Proxmox when the provisioner raised it, else the step's."""
    return "Proxmox" if isinstance(exc, ProvisionerError) else step.needs


def one_line(exc: BaseException) -> str:
    """The error as one redacted line (URLs with keys and token secrets masked)."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return redact(text)[:REASON_CHARS]


class StartGate:
    """Runs the start-up steps until all succeed, or until a stop is asked for."""

    def __init__(self, health: HealthState, stop: threading.Event, *,
                 delay: Callable[[int], float] = backoff) -> None:
        self.health = health
        self.stop = stop
        self.delay = delay

    def open(self, steps: Sequence[StartStep]) -> bool:
        """True once every step succeeded (in order; a retry resumes at the failed step);
        False when stopped first. A permanent failure is raised unchanged."""
        index, failures = 0, 0
        while index < len(steps):
            if self.stop.is_set():
                return False
            step = steps[index]
            try:
                step.run()
            except Exception as exc:
                if classify(exc) is Failure.PERMANENT:
                    raise
                failures += 1
                self._wait(step, exc, failures)
                continue
            index, failures = index + 1, 0
        self.health.starting = None
        liveness.sd_notify("STATUS=running: the start gate is open")
        log.info("start.gate_open")
        return True

    def _wait(self, step: StartStep, exc: Exception, failures: int) -> None:
        reason = f"waiting for {awaited(step, exc)}: {one_line(exc)}"
        self.health.starting = reason
        seconds = self.delay(failures)
        log.warning("start.waiting", step=step.name, reason=reason, tries=failures,
                    retry_in=round(seconds, 1))
        liveness.sd_notify(f"STATUS=starting: {reason}")
        liveness.feed_watchdog()
        liveness.pause(self.stop.wait, seconds, stop=self.stop)


@contextmanager
def interruptible(stop: Callable[[], None]) -> Iterator[None]:
    """While the gate is closed, SIGTERM/SIGINT call ``stop`` and raise
    :class:`StartInterrupted` in the main thread (the try in progress ends at once); the
    caller installs its own handlers afterwards."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop()
        raise StartInterrupted

    previous = {signum: signal.signal(signum, handler)
                for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
