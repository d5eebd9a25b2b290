"""One convergence step of the chain follower: reorg check, promotion, next range.

``scan_once`` never starts "from head": it continues after the persisted cursor. Logs of
blocks above the confirmed head are journaled but not applied; they become chain facts (and
so can cause effects) only once their block is confirmed (:meth:`Store.promote`). Each step:

1. the block at the cursor must still have the hash we stored; if not, walk back through the
   window of remembered hashes to the common ancestor and drop the orphaned, never applied
   events (:meth:`Store.rewind`). A reorg below the confirmed cursor halts effects and alerts
   instead: it never destroys anything.
2. promote journaled events up to the confirmed head, re-checking their blocks' hashes;
3. fetch the logs of the next range and journal them with the new cursor in one transaction.

The runner only decides how long to sleep.
"""

from __future__ import annotations

import enum
import gc
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import structlog

from listener.chain.events import DecodedLog, decode_log
from listener.chain.journal import Store
from listener.chain.prefetch import LogPrefetcher
from listener.chain.ranges import RangeController
from listener.chain.rpc import TransientRpcError
from listener.chain.source import ChainSource
from listener.config import ChainConfig

log = structlog.get_logger(__name__)


class Outcome(enum.Enum):
    NOTHING_NEW = "nothing_new"
    PROGRESSED = "progressed"
    REORGED = "reorged"
    HALTED = "halted"


@dataclass(frozen=True)
class ScanResult:
    outcome: Outcome
    from_block: int | None = None
    to_block: int | None = None
    new_events: int = 0
    promoted: int = 0
    caught_up: bool = True


def confirmed_head(rpc: ChainSource, confirmations: int | str, head: int) -> int:
    """Newest block we treat as confirmed: ``head - depth`` or the node's finalized/safe tag."""
    if isinstance(confirmations, str):
        return min(head, quantity(rpc.get_block(confirmations)["number"]))
    return head - confirmations


def quantity(value: Any) -> int:
    """A JSON-RPC quantity ("0x..." or a number) as an int."""
    return value if isinstance(value, int) else int(str(value), 16)


def header_hash(block: dict[str, Any]) -> str:
    """A block header's hash, lower-case 0x hex."""
    value = block["hash"]
    return (value if isinstance(value, str) else "0x" + bytes(value).hex()).lower()


def find_common_ancestor(window: Iterable[tuple[int, str]],
                         canonical_hash: Callable[[int], str | None]) -> tuple[int, str] | None:
    """Newest remembered block whose hash is still canonical, or None if none is.

    ``window`` is newest first; a match at block N proves every block below N canonical
    (each block commits to its parent), so the walk stops at the first match (and reads
    ``window`` no further)."""
    for number, stored in window:
        if canonical_hash(number) == stored:
            return number, stored
    return None


def _check_reorg(rpc: ChainSource, store: Store, cursor: int, cursor_hash: str,
                 cursor_block: dict[str, Any]) -> ScanResult | None:
    """None if the cursor block (just read) is still canonical; otherwise handle the reorg."""
    if header_hash(cursor_block) == cursor_hash:
        return None

    def canonical(number: int) -> str | None:
        # A block the node does not have (a shorter fork) is simply not a match; any other
        # RPC failure propagates, so a flaky node can never fake a deep reorg.
        block = rpc.call("eth_getBlockByNumber", hex(number), False)
        return None if block is None else header_hash(block)

    state = store.chain_state()
    applied = state.applied_block if state.applied_block is not None else -1
    found = find_common_ancestor(store.window(), canonical)
    if found is None or found[0] < applied:
        ancestor = None if found is None else found[0]
        reason = (f"reorg below the confirmed cursor (block {applied}, common ancestor "
                  f"{'unknown' if ancestor is None else ancestor}): deeper than the "
                  "confirmation depth; effects halted, operator action needed: stop the "
                  "listener, check `blockhost reorg show`, then `blockhost reorg accept --yes`")
        store.record_deep_reorg(reason, old_cursor=cursor, ancestor=ancestor)
        log.critical("chain.reorg_below_confirmations", cursor=cursor, confirmed=applied,
                     ancestor=ancestor)
        return ScanResult(Outcome.HALTED)
    ancestor, ancestor_hash = found
    dropped = store.rewind(ancestor, ancestor_hash, old_cursor=cursor)
    log.warning("chain.reorg", old_cursor=cursor, ancestor=ancestor, depth=cursor - ancestor,
                dropped_events=dropped)
    return ScanResult(Outcome.REORGED, from_block=ancestor + 1, to_block=cursor)


def _promote(rpc: ChainSource, store: Store, up_to: int) -> int:
    """Apply journaled events up to ``up_to`` after re-checking their blocks are canonical."""
    for number, stored in sorted(store.unapplied_blocks(up_to).items()):
        if header_hash(rpc.get_block(number)) != stored:
            # Orphaned between journaling and confirmation: the next step's cursor check
            # walks back; never apply an event from a dead fork.
            raise TransientRpcError(f"block {number} changed hash before confirmation")
    block = rpc.get_block(up_to)
    return store.promote(up_to, block_hash=header_hash(block),
                         timestamp=quantity(block["timestamp"]))


def block_times_for(rpc: ChainSource, decoded: list[DecodedLog], known: dict[int, int]) -> dict[int, int]:
    """Timestamps of blocks holding cancellations (grace counts from the cancellation)."""
    times = dict(known)
    for entry in decoded:
        if entry.name == "SubscriptionCancelled" and entry.block_number not in times:
            times[entry.block_number] = quantity(rpc.get_block(entry.block_number)["timestamp"])
    return times


def scan_once(rpc: ChainSource, store: Store, chain: ChainConfig,
              controller: RangeController | None = None, *,
              prefetch: LogPrefetcher | None = None) -> ScanResult:
    """Check for a reorg, promote what became confirmed, then journal the next range.

    Pass the same ``controller`` on every call so what it learned about the provider's
    range limits survives between steps. With a ``prefetch`` (built on that controller),
    the next confirmed range is fetched while this one is decoded and journaled."""
    if chain.subscription_contract is None:
        raise chain.no_subscription_contract()
    if prefetch is not None and controller is not None and controller is not prefetch.controller:
        raise ValueError("the prefetcher must share the scan's range controller")
    state = store.chain_state()
    if state.halted_reason:
        return ScanResult(Outcome.HALTED)
    cursor_block: dict[str, Any] | None = None
    if state.cursor is not None and state.cursor_hash is not None:
        head, cursor_block = rpc.head_and_block(state.cursor)  # one round trip for both
    else:
        head = rpc.block_number()
    confirmed = confirmed_head(rpc, chain.confirmations, head)
    store.record_heads(head, confirmed)

    if state.cursor is not None and state.cursor > head:
        # A lagging node, or a reorg onto a shorter fork: never rewind on a head alone; the
        # hash check below runs once the node has the cursor's block again.
        log.info("chain.head_behind_cursor", head=head, cursor=state.cursor)
        return ScanResult(Outcome.NOTHING_NEW)
    if state.cursor is not None and state.cursor_hash is not None:
        if cursor_block is None:  # only when head < cursor, handled above
            raise TransientRpcError(f"block {state.cursor} not available")
        reorg = _check_reorg(rpc, store, state.cursor, state.cursor_hash, cursor_block)
        if reorg is not None:
            if prefetch is not None:
                prefetch.discard()
            return reorg
    cursor = state.cursor if state.cursor is not None else chain.start_block - 1
    applied = state.applied_block if state.applied_block is not None else chain.start_block - 1

    promoted = 0
    target = min(confirmed, cursor)
    if target > applied:
        promoted = _promote(rpc, store, target)

    if cursor >= head:
        outcome = Outcome.PROGRESSED if promoted else Outcome.NOTHING_NEW
        return ScanResult(outcome, promoted=promoted)
    from_block = cursor + 1
    with _cyclic_gc_paused():
        return _journal_next_range(rpc, store, chain, controller, prefetch,
                                   from_block=from_block, head=head, confirmed=confirmed,
                                   promoted=promoted)


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """A range of 10,000 logs allocates ~100,000 acyclic dicts and strings; the cyclic
    collector's passes over them cost 6-20% of catch-up time and free nothing. Reference
    counting still frees everything; the collector runs again right after."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _journal_next_range(rpc: ChainSource, store: Store, chain: ChainConfig,
                        controller: RangeController | None, prefetch: LogPrefetcher | None,
                        *, from_block: int, head: int, confirmed: int,
                        promoted: int) -> ScanResult:
    """Fetch, decode and journal the range starting at ``from_block`` (one step)."""
    if chain.subscription_contract is None:
        raise chain.no_subscription_contract()
    # One served eth_getLogs plus the end block's header from the same node; the controller
    # shrinks the span on providers' range/size refusals and grows it back slowly.
    if prefetch is not None:
        batch = prefetch.fetch(from_block, head, confirmed=confirmed)
    else:
        batch = rpc.fetch_logs(from_block, head, address=chain.subscription_contract,
                               controller=controller
                               or RangeController.for_listener(chain.max_block_range))
    to_block, logs = batch.to_block, batch.logs
    end_hash, end_time = header_hash(batch.to_header), quantity(batch.to_header["timestamp"])
    del batch
    decoded = [decode_log(entry, contract=chain.subscription_contract) for entry in logs]
    del logs
    if prefetch is not None and to_block < confirmed:
        # Only now: this parsed reply is released before the next one arrives, so a
        # prefetching catch-up holds one reply plus one decoded range (and the controller
        # aims each at half the usual logs). The next range is served and parsed while
        # this one is committed.
        prefetch.start(to_block + 1, confirmed)
    times = block_times_for(rpc, decoded, {to_block: end_time})

    if to_block <= confirmed:
        new = store.journal_batch(decoded, to_block=to_block, to_hash=end_hash,
                                  to_timestamp=end_time, block_times=times)
    else:
        # Near the head: every block holding one of our logs is re-checked against the
        # header we just read, so a reorg racing this range cannot slip a dead fork's log in.
        window = sorted({(e.block_number, e.block_hash) for e in decoded})
        for number, block_hash in window:
            if number == to_block and block_hash != end_hash:
                raise TransientRpcError(f"block {number} changed hash during the scan")
        new = store.journal_unconfirmed(decoded, to_block=to_block, to_hash=end_hash,
                                        block_times=times, window=window)
    log.info("chain.scanned", from_block=from_block, to_block=to_block, logs=len(decoded),
             new_events=new, promoted=promoted, head=head, confirmed=confirmed)
    return ScanResult(Outcome.PROGRESSED, from_block, to_block, new, promoted,
                      caught_up=to_block >= head)
