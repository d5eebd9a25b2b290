"""Replay progress: a rich progress bar on a terminal, periodic log lines otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from listener.ops.replay import OnProgress

log = structlog.get_logger(__name__)


@contextmanager
def progress_reporter(total_blocks: int) -> Iterator[OnProgress]:
    """A rich progress bar (blocks, events, rate, ETA) on a TTY; periodic log lines otherwise."""
    if sys.stderr.isatty():
        with _progress_bar(total_blocks) as advance:
            yield advance
        return
    yield _progress_logger(total_blocks)


@contextmanager
def _progress_bar(total_blocks: int) -> Iterator[OnProgress]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("blocks"), BarColumn(), MofNCompleteColumn(),
               TextColumn("events {task.fields[events]}"),
               TextColumn("{task.fields[rate]} blocks/s"),
               TimeRemainingColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task("replay", total=total_blocks, events=0, rate="-")
        seen = 0

        def advance(blocks: int, events: int) -> None:
            nonlocal seen
            seen += events
            bar.update(task, advance=blocks, events=seen)
            speed = bar.tasks[0].speed
            bar.update(task, rate="-" if speed is None else f"{speed:,.0f}")

        yield advance


def _progress_logger(total_blocks: int) -> OnProgress:
    """Logs ``replay.progress`` at most every two seconds, and once at the end."""
    started = time.monotonic()
    done = events_total = 0
    last = 0.0

    def report(blocks: int, events: int) -> None:
        nonlocal done, events_total, last
        done += blocks
        events_total += events
        now = time.monotonic()
        if now - last >= 2.0 or done >= total_blocks:
            last = now
            rate = done / max(now - started, 1e-6)
            eta = (total_blocks - done) / rate if rate else None
            log.info("replay.progress", blocks=done, total_blocks=total_blocks,
                     events=events_total, blocks_per_s=round(rate, 1),
                     eta_s=None if eta is None else round(eta, 1))

    return report
