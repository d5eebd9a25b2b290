"""``blockhost dlq``: the subscriptions whose steps failed for good, listed, retried or dropped."""

from __future__ import annotations

from contextlib import closing
from dataclasses import replace

from listener.config import Config
from listener.errors import UserError
from listener.ops.database import open_database
from listener.reconcile.dead_letters import DeadLetter, DeadLetterError, DeadLetters
from listener.reconcile.progress import ProgressStore


def list_dead_letters(config: Config, *, include_resolved: bool) -> list[DeadLetter]:
    """The open dead letters (with ``include_resolved``, the retried and dropped ones too)."""
    with closing(open_database(config)) as store:
        return DeadLetters(store.conn).list(include_resolved=include_resolved)


def retry_dead_letter(config: Config, entry_id: int) -> DeadLetter:
    """Close the entry and reset the subscription's attempts: the running listener retries."""
    with closing(open_database(config)) as store:
        try:
            entry = DeadLetters(store.conn).retry(entry_id)
        except DeadLetterError as exc:
            raise UserError(str(exc)) from None
        progress = ProgressStore(store.conn)
        before = progress.of(entry.subscription_id)
        progress.save(entry.subscription_id, before,
                      replace(before, attempts=0, last_error=None))
        return entry


def drop_dead_letter(config: Config, entry_id: int) -> DeadLetter:
    """Give up until new chain facts arrive for the subscription."""
    with closing(open_database(config)) as store:
        try:
            return DeadLetters(store.conn).drop(entry_id)
        except DeadLetterError as exc:
            raise UserError(str(exc)) from None
