"""One check's verdict, and the guard that turns any failure inside a check into a verdict.

A check never raises: whatever an adapter throws (a refused connection, a 401, a revert) ends
as a failed :class:`Check` whose detail is one redacted line, so `doctor` prints a table and
never a traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from listener.redact import redact

#: longest detail kept from an exception (one line of a table)
DETAIL_CHARS = 240


@dataclass(frozen=True)
class Check:
    """What one check found: ``ok``, or not and what to do (``fix``); ``skipped`` when it
    could not apply here (it then counts as no failure)."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    skipped: bool = False

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def passed(name: str, detail: str) -> Check:
    return Check(name, True, detail)


def failed(name: str, detail: str, fix: str) -> Check:
    return Check(name, False, one_line(detail), one_line(fix))


def skipped(name: str, why: str) -> Check:
    return Check(name, True, why, skipped=True)


def one_line(text: str) -> str:
    """``text`` redacted, on one line, at most DETAIL_CHARS long."""
    flat = " ".join(redact(text).split())
    return flat if len(flat) <= DETAIL_CHARS else flat[:DETAIL_CHARS - 1] + "…"


def describe(exc: BaseException) -> str:
    """An exception as a short reason (its message, else its type)."""
    text = str(exc).strip()
    return text if text else type(exc).__name__


def guarded(name: str, fix: str, run: Callable[[], Check]) -> Check:
    """``run()``, or a failed check carrying what it raised (redacted) and ``fix``."""
    try:
        return run()
    except Exception as exc:  # noqa: BLE001 - a check reports every failure as a verdict
        return failed(name, describe(exc), fix)
