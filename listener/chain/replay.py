"""``blockhost replay``: re-process a confirmed block range through the idempotent journal.

Events are keyed by (block hash, log index), so replaying what was already handled changes
nothing; an event the journal lacks (a node that once returned too little, a bug) is added
and the facts of the subscriptions it touches are re-derived in chain order. Effects follow
from the facts as always: the daemon's reconciler picks the changes up. An event that the
journal holds with a different block hash is a fork the listener never saw: it is reported
and left alone, because only an operator can decide which chain is right.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import structlog

from listener.chain.events import DecodedLog, decode_log
from listener.chain.journal import Store
from listener.chain.prefetch import LogPrefetcher
from listener.chain.scanner import block_times_for
from listener.chain.source import ChainSource
from listener.config import ChainConfig
from listener.errors import UserError

log = structlog.get_logger(__name__)


@dataclass
class ReplayReport:
    """What a replay saw and did; printed as one JSON line."""

    from_block: int
    to_block: int
    dry_run: bool
    events_seen: int = 0
    already_journaled: int = 0
    missing: int = 0
    added: int = 0
    conflicts: int = 0
    rejected: int = 0
    changes: list[dict[str, object]] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def plan_range(store: Store, from_block: int, to_block: int | None) -> tuple[int, int]:
    """Validate the range against the confirmed cursor; blocks above it are not final yet."""
    state = store.chain_state()
    confirmed = state.applied_block
    if confirmed is None:
        raise UserError("nothing to replay yet: the listener has not confirmed any block; "
                        "start `blockhost listen` first")
    end = confirmed if to_block is None else to_block
    if from_block < 0 or end < from_block:
        raise UserError(f"empty block range {from_block}..{end}: --from-block must be >= 0 "
                        "and <= --to-block")
    if end > confirmed:
        raise UserError(f"--to-block {end} is above the confirmed cursor {confirmed}; the "
                        "listener is still following those blocks: use --to-block "
                        f"{confirmed} or less")
    return from_block, end


def _classify(store: Store, entry: DecodedLog) -> str:
    hashes = store.event_hash_at(entry.block_number, entry.log_index)
    if entry.block_hash in hashes:
        return "known"
    return "conflict" if hashes else "missing"


def replay(rpc: ChainSource, store: Store, chain: ChainConfig, from_block: int, to_block: int,
           *, dry_run: bool, on_progress: Callable[[int, int], None] = lambda _b, _e: None,
           ) -> ReplayReport:
    """Re-fetch ``from_block..to_block`` in adaptive chunks (at most ``max_block_range``)
    and fill the gaps."""
    if chain.subscription_contract is None:
        raise chain.no_subscription_contract()
    report = ReplayReport(from_block, to_block, dry_run)
    # The whole range is confirmed (checked by the caller): fetch ahead while journaling.
    prefetch = LogPrefetcher.for_listener(rpc, address=chain.subscription_contract,
                                          max_block_range=chain.max_block_range)
    start = from_block
    try:
        while start <= to_block:
            start = _replay_range(rpc, store, chain, prefetch, report, start, to_block,
                                  dry_run=dry_run, on_progress=on_progress)
    finally:
        prefetch.discard()
    return report


def _replay_range(rpc: ChainSource, store: Store, chain: ChainConfig, prefetch: LogPrefetcher,
                  report: ReplayReport, start: int, to_block: int, *, dry_run: bool,
                  on_progress: Callable[[int, int], None]) -> int:
    """Fetch one served range from ``start``, fill its gaps; return the next start block."""
    if chain.subscription_contract is None:
        raise chain.no_subscription_contract()
    batch = prefetch.fetch(start, to_block, confirmed=to_block)
    end = batch.to_block
    decoded = [decode_log(entry, contract=chain.subscription_contract) for entry in batch.logs]
    del batch
    if end < to_block:  # as in the scanner: only once this reply is decoded and released
        prefetch.start(end + 1, to_block)
    missing: list[DecodedLog] = []
    for entry in decoded:
        report.events_seen += 1
        verdict = _classify(store, entry)
        if verdict == "known":
            report.already_journaled += 1
            continue
        if verdict == "conflict":
            report.conflicts += 1
            log.error("replay.conflict", block=entry.block_number, log_index=entry.log_index,
                      block_hash=entry.block_hash)
            continue
        report.missing += 1
        if entry.rejected:
            report.rejected += 1
        missing.append(entry)
        if len(report.changes) < 100:
            report.changes.append({"block": entry.block_number, "log_index": entry.log_index,
                                   "event": entry.name,
                                   "subscription_id": entry.subscription_id})
    if missing and not dry_run:
        report.added += store.journal_replayed(missing,
                                               block_times=block_times_for(rpc, missing, {}))
    log.info("replay.range", from_block=start, to_block=end, events=len(decoded),
             missing=len(missing), dry_run=dry_run)
    on_progress(end - start + 1, len(decoded))
    return end + 1
