"""A deep reorg's halt against the canonical chain: what it orphaned, and accepting that chain.

A reorg below the confirmed cursor halts effects (:mod:`listener.chain.scanner`), because
facts we may have acted on are gone. :func:`inspect_fork` shows the operator the fork: the
common ancestor, the stored and canonical hashes above it, the journaled events there and
the subscriptions they name. :func:`accept_canonical` then, on the operator's word, forgets
everything journaled above the ancestor, journals the canonical logs up to the confirmed head
in its place, re-derives the facts and clears the halt, in one transaction
(:meth:`Store.accept_fork`).

The common ancestor is the newest block the journal knows (its window of hashes or a
journaled event's block) whose hash is still canonical: every block below it is canonical
too, every known block above it is orphaned. When none is, the fork reaches below everything
the journal remembers, and the journal is re-derived from ``chain.start_block``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import asdict, dataclass, field

from listener.chain.events import DecodedLog, decode_log
from listener.chain.journal import Store
from listener.chain.prefetch import LogPrefetcher
from listener.chain.retraction import ForkAccepted
from listener.chain.scanner import (
    block_times_for,
    confirmed_head,
    find_common_ancestor,
    header_hash,
    quantity,
)
from listener.chain.source import ChainSource
from listener.config import ChainConfig
from listener.errors import UserError

#: How many orphaned blocks :class:`Fork` lists (the count covers them all).
SHOWN_BLOCKS = 20


@dataclass(frozen=True)
class OrphanedBlock:
    number: int
    stored_hash: str
    #: None when the node has no block at that height (the canonical chain is shorter)
    canonical_hash: str | None


@dataclass(frozen=True)
class Fork:
    """The journal against the canonical chain, as ``blockhost reorg show`` prints it."""

    halted: str | None
    cursor: int | None
    confirmed_cursor: int | None
    ancestor: int
    ancestor_hash: str
    ancestor_time: int
    confirmed_head: int
    #: journaled events above the ancestor (all on the orphaned fork), and the subscriptions
    #: they name: the ones whose facts an accept re-derives
    orphaned_events: int
    affected_subscriptions: list[int]
    orphaned_block_count: int
    #: newest first, at most SHOWN_BLOCKS
    orphaned_blocks: list[OrphanedBlock] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return asdict(self)


class _CanonicalHashes:
    """Block number → canonical hash (None: no such block), one RPC call per number."""

    def __init__(self, rpc: ChainSource) -> None:
        self.rpc = rpc
        self.seen: dict[int, str | None] = {}

    def __call__(self, number: int) -> str | None:
        if number not in self.seen:
            block = self.rpc.call("eth_getBlockByNumber", hex(number), False)
            self.seen[number] = None if block is None else header_hash(block)
        return self.seen[number]


def _recorded(pairs: Iterable[tuple[int, str]],
              visited: list[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    for pair in pairs:
        visited.append(pair)
        yield pair


def inspect_fork(rpc: ChainSource, store: Store, chain: ChainConfig) -> Fork:
    """Find the common ancestor of the journal and the canonical chain, and what lies above."""
    state = store.chain_state()
    confirmed = confirmed_head(rpc, chain.confirmations, rpc.block_number())
    canonical = _CanonicalHashes(rpc)
    visited: list[tuple[int, str]] = []
    with closing(store.remembered_blocks()) as remembered:
        found = find_common_ancestor(_recorded(remembered, visited), canonical)
    if found is None:
        found = _below_everything(canonical, chain.start_block)
    else:
        visited.pop()  # the match itself
    ancestor, ancestor_hash = found
    events, subscriptions = store.events_above(ancestor)
    orphaned = [OrphanedBlock(n, h, canonical(n)) for n, h in visited]
    return Fork(halted=state.halted_reason, cursor=state.cursor,
                confirmed_cursor=state.applied_block, ancestor=ancestor,
                ancestor_hash=ancestor_hash,
                ancestor_time=quantity(rpc.get_block(ancestor)["timestamp"]),
                confirmed_head=confirmed, orphaned_events=events,
                affected_subscriptions=subscriptions, orphaned_block_count=len(visited),
                orphaned_blocks=orphaned[:SHOWN_BLOCKS])


def _below_everything(canonical: _CanonicalHashes, start_block: int) -> tuple[int, str]:
    """No remembered block is canonical: the ancestor is the block before ``start_block``."""
    number = max(start_block - 1, 0)
    block_hash = canonical(number)
    if block_hash is None:
        raise UserError(f"the RPC has no block {number} (the block before chain.start_block); "
                        "check chain.rpc_urls and chain.start_block")
    return number, block_hash


def accept_canonical(rpc: ChainSource, store: Store, chain: ChainConfig,
                     fork: Fork) -> ForkAccepted:
    """Replace everything journaled above ``fork``'s ancestor with the canonical chain up to
    its confirmed head, re-derive the facts, clear the halt (see the module docstring)."""
    if not store.chain_state().halted_reason:
        raise UserError("nothing to accept: effects are not halted by a deep reorg "
                        "(`blockhost status` shows the chain)")
    if fork.confirmed_head < fork.ancestor:
        raise UserError(f"the canonical chain is confirmed only up to block "
                        f"{fork.confirmed_head}, below the common ancestor {fork.ancestor}; "
                        "wait for more blocks, then run `blockhost reorg accept --yes` again")
    logs, end_hash, end_time = _canonical_logs(rpc, chain, fork)
    times = block_times_for(rpc, logs, {fork.confirmed_head: end_time})
    return store.accept_fork(
        logs, ancestor=(fork.ancestor, fork.ancestor_hash, fork.ancestor_time),
        to_block=fork.confirmed_head, to_hash=end_hash, to_timestamp=end_time,
        block_times=times)


def _canonical_logs(rpc: ChainSource, chain: ChainConfig,
                    fork: Fork) -> tuple[list[DecodedLog], str, int]:
    """The decoded logs of ancestor+1..confirmed head, and that head's hash and time."""
    if chain.subscription_contract is None:
        raise chain.no_subscription_contract()
    first, last = fork.ancestor + 1, fork.confirmed_head
    if first > last:
        return [], fork.ancestor_hash, fork.ancestor_time
    prefetch = LogPrefetcher.for_listener(rpc, address=chain.subscription_contract,
                                          max_block_range=chain.max_block_range)
    decoded: list[DecodedLog] = []
    try:
        while True:
            batch = prefetch.fetch(first, last, confirmed=last)
            if batch.to_block < last:
                prefetch.start(batch.to_block + 1, last)
            decoded += [decode_log(entry, contract=chain.subscription_contract)
                        for entry in batch.logs]
            if batch.to_block >= last:
                return decoded, header_hash(batch.to_header), quantity(batch.to_header["timestamp"])
            first = batch.to_block + 1
    finally:
        prefetch.discard()
