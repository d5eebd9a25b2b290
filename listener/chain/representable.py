"""Which chain values the journal can hold, and what happens to those it cannot.

Every ``uint`` of the contract's events is a ``uint256``, while SQLite's INTEGER is a signed
64-bit number: binding a bigger value raises ``OverflowError``, which would roll back the whole
range, retried forever. The event's own arguments are always journaled exactly (as decimal
text, see :func:`listener.chain.events.args_json`); only the values copied into INTEGER
columns are judged here:

* an **identifier or a price** (``subscriptionId``, ``planId``, ``pricePerDayUsdCents``) at
  2**63 or more cannot be represented, so the event is journaled as *rejected* with that
  reason: no VM or NFT is made for a fact we cannot state, and the operator sees it in the
  logs (``chain.event_rejected``) and in the journal. The reference contract hands out small
  counters as identifiers, and no real stablecoin could pay a price that large.
* an **expiry** (``expiresAt``, ``newExpiresAt``) beyond :data:`MAX_EXPIRES_AT` is reachable
  by paying for an absurd number of days (the reference contract does not cap ``days``). The
  payment is real, so rejecting it would refuse a paid purchase or, for an extension, let a
  paid subscription stop at its old expiry. It is applied as :data:`MAX_EXPIRES_AT` instead:
  the subscription runs "forever", which is what was paid for, and the clamp is logged
  (``chain.expiry_clamped``). The NFT then carries the same clamped expiry.
"""

from __future__ import annotations

import structlog

from listener.chain.events import DecodedLog

log = structlog.get_logger(__name__)

#: The largest value an SQLite INTEGER column holds.
INT64_MAX = 2**63 - 1
#: The latest expiry the facts record: 9999-12-31T23:59:59Z, the last second Python's
#: ``datetime`` can show, far below 2**63 so that adding a grace period never overflows.
MAX_EXPIRES_AT = 253_402_300_799
#: Arguments copied as they are into INTEGER columns (events, subscriptions, plans).
STORED_AS_IS = ("subscriptionId", "planId", "pricePerDayUsdCents")


def oversized(entry: DecodedLog) -> str | None:
    """Why this event's facts cannot be stored (an identifier or price of 2**63 or more),
    or None."""
    args = entry.args
    for key in STORED_AS_IS:
        value = args.get(key)
        if value is not None and value > INT64_MAX:
            return f"{key} >= 2**63 does not fit a signed 64-bit integer"
    return None


def contain(entry: DecodedLog) -> DecodedLog:
    """``entry`` as it can be journaled: rejected, with its reason, if :func:`oversized`."""
    if entry.rejected is not None:
        return entry
    reason = oversized(entry)
    if reason is None:
        return entry
    log.warning("chain.event_rejected", block=entry.block_number, log_index=entry.log_index,
                name=entry.name, reason=reason[:200])
    return entry._replace(rejected=reason)


def column_int(value: int | None) -> int | None:
    """An identifier for an INTEGER column: None when it does not fit (the event carrying it
    is rejected by :func:`contain`; its arguments keep the exact value)."""
    return value if value is None or value <= INT64_MAX else None


def stored_expiry(value: int, subscription_id: int) -> int:
    """The expiry the facts record: ``value``, or :data:`MAX_EXPIRES_AT` beyond it."""
    if value <= MAX_EXPIRES_AT:
        return value
    log.warning("chain.expiry_clamped", subscription=subscription_id, expires_at=str(value),
                stored=MAX_EXPIRES_AT)
    return MAX_EXPIRES_AT
