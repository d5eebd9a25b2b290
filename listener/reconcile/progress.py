"""Our progress on each subscription, kept apart from its chain facts.

One ``subscriptions`` row holds both, written by two parties: the journal writes the facts
together with the events that carry them (:mod:`listener.chain.journal`), the reconciler writes
its progress here. Reading them as two values keeps the writers apart: nothing in ``chain/``
knows what we built, and a step changes progress as one frozen :class:`Progress` value, of which
only the fields that changed are written (so a concurrent writer of another field, such as
``dlq retry``, is never overwritten with a stale value).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, fields

from listener.reconcile.decide import SubscriptionState

#: ``credentials_vm`` of an NFT found on chain (a restored or lost database) whose sealed
#: details do not name the subscription's VM: never an inventory id, so it reads as stale.
DETAILS_NAME_ANOTHER_VM = -1


def sealed_for(record_id: int, *, names_it: bool, can_seal: bool) -> int | None:
    """``credentials_vm`` after a mint or a token found on chain: the VM its details name,
    DETAILS_NAME_ANOTHER_VM when they name another (and we hold the signature to re-seal),
    None when nothing can be sealed."""
    if names_it:
        return record_id
    return DETAILS_NAME_ANOTHER_VM if can_seal else None


@dataclass(frozen=True)
class Progress:
    """What we have done for one subscription so far."""

    state: SubscriptionState = SubscriptionState.PENDING
    token_id: int | None = None
    nft_expires_at: int | None = None
    #: Why the NFT carries no connection details (never a secret).
    credential_note: str | None = None
    last_error: str | None = None
    #: Consecutive failed steps; reset when the subscription converges.
    attempts: int = 0
    #: The inventory record whose address the NFT's sealed details name; None: nothing sealed
    #: (see credential_note); DETAILS_NAME_ANOTHER_VM: a token found on chain that names
    #: another address, so they are re-sealed for this VM.
    credentials_vm: int | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Progress:
        return cls(state=SubscriptionState(row["state"]), token_id=row["token_id"],
                   nft_expires_at=row["nft_expires_at"], credential_note=row["credential_note"],
                   last_error=row["last_error"], attempts=int(row["attempts"]),
                   credentials_vm=row["credentials_vm"])


#: Column names, from the dataclass itself (so the SQL below names only these).
_COLUMNS = tuple(f.name for f in fields(Progress))
_SELECT = f"SELECT id, {', '.join(_COLUMNS)} FROM subscriptions"  # noqa: S608 - fixed names


class ProgressStore:
    """Progress columns of ``subscriptions`` and the ``steps`` journal, on one connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def of(self, subscription_id: int) -> Progress:
        """The subscription's progress (a fresh one when it is not journaled yet)."""
        row = self.conn.execute(f"{_SELECT} WHERE id = ?", (subscription_id,)).fetchone()
        return Progress.from_row(row) if row else Progress()

    def all(self) -> dict[int, Progress]:
        return {int(row["id"]): Progress.from_row(row) for row in self.conn.execute(_SELECT)}

    def save(self, subscription_id: int, before: Progress, after: Progress) -> Progress:
        """Write the fields in which ``after`` differs from ``before``; returns ``after``."""
        changed = {name: getattr(after, name) for name in _COLUMNS
                   if getattr(after, name) != getattr(before, name)}
        if changed:
            assignments = ", ".join(f"{name} = ?" for name in changed)
            self.conn.execute(
                f"UPDATE subscriptions SET {assignments}, updated_at = ? WHERE id = ?",  # noqa: S608 - names from _COLUMNS
                (*changed.values(), int(time.time()), subscription_id))
        return after

    def journal_step(self, subscription_id: int, step: str, phase: str, detail: str = "", *,
                     unless_repeated: bool = False) -> None:
        """One line of the step journal: before ("started") and after ("done"/"failed").

        ``unless_repeated`` skips the line when it would repeat the subscription's last one
        (a wait on the signer or a pending transaction writes one row, not one per loop)."""
        detail = detail[:500]
        if unless_repeated and self.last_step(subscription_id) == (step, phase, detail):
            return
        self.conn.execute(
            "INSERT INTO steps (subscription_id, step, phase, detail, at) VALUES (?, ?, ?, ?, ?)",
            (subscription_id, step, phase, detail, int(time.time())))

    def last_step(self, subscription_id: int) -> tuple[str, str, str] | None:
        row = self.conn.execute(
            "SELECT step, phase, detail FROM steps WHERE subscription_id = ?"
            " ORDER BY id DESC LIMIT 1", (subscription_id,)).fetchone()
        return (row[0], row[1], row[2]) if row else None

    def served(self) -> set[int]:
        """Subscriptions that ever had a VM built (a ``create_vm`` step that finished)."""
        rows = self.conn.execute(
            "SELECT DISTINCT subscription_id FROM steps WHERE step = 'create_vm'"
            " AND phase = 'done'")
        return {int(r[0]) for r in rows}

    def steps(self, subscription_id: int) -> list[tuple[str, str, str]]:
        rows = self.conn.execute(
            "SELECT step, phase, detail FROM steps WHERE subscription_id = ? ORDER BY id",
            (subscription_id,))
        return [(r[0], r[1], r[2]) for r in rows]
