"""One convergence step of the chain follower.

``scan_once`` reads the head, works out the confirmed head, fetches the logs of the next
range after the persisted cursor (never "from head"), decodes them and journals them
together with the new cursor in one transaction. The runner only decides how long to sleep.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import structlog

from listener.config import ChainConfig
from listener.events import decode_log
from listener.rpc import RpcClient
from listener.store import Store

log = structlog.get_logger(__name__)


class Outcome(enum.Enum):
    NOTHING_NEW = "nothing_new"
    PROGRESSED = "progressed"
    HALTED = "halted"


@dataclass(frozen=True)
class ScanResult:
    outcome: Outcome
    from_block: int | None = None
    to_block: int | None = None
    new_events: int = 0
    caught_up: bool = True


def confirmed_head(rpc: RpcClient, confirmations: int | str, head: int) -> int:
    """Newest block we treat as confirmed: ``head - depth`` or the node's finalized/safe tag."""
    if isinstance(confirmations, str):
        return int(rpc.get_block(confirmations)["number"], 16)
    return head - confirmations


def scan_once(rpc: RpcClient, store: Store, chain: ChainConfig) -> ScanResult:
    """Advance the cursor by at most ``max_block_range`` confirmed blocks."""
    assert chain.subscription_contract is not None
    state = store.chain_state()
    if state.halted_reason:
        return ScanResult(Outcome.HALTED)
    head = rpc.block_number()
    confirmed = confirmed_head(rpc, chain.confirmations, head)
    store.record_heads(head, confirmed)
    cursor = state.cursor if state.cursor is not None else chain.start_block - 1
    if state.cursor is not None and state.cursor_hash is not None:
        # The block we stopped at must still be canonical; if not, a reorg went deeper than
        # the confirmation depth. Halt effects and alert instead of guessing.
        seen = rpc.get_block(state.cursor)
        if str(seen["hash"]).lower() != state.cursor_hash:
            reason = (f"block {state.cursor} changed hash after it was confirmed: reorg deeper "
                      "than the confirmation depth; effects halted, operator action needed")
            store.halt(reason)
            log.critical("chain.reorg_below_confirmations", block=state.cursor)
            return ScanResult(Outcome.HALTED)
    if cursor >= confirmed:
        return ScanResult(Outcome.NOTHING_NEW)
    from_block = cursor + 1
    to_block = min(confirmed, from_block + chain.max_block_range - 1)
    raw_logs = rpc.get_logs(chain.subscription_contract, from_block, to_block)
    decoded = [decode_log(entry, contract=chain.subscription_contract) for entry in raw_logs]
    end = rpc.get_block(to_block)
    block_times = {to_block: int(end["timestamp"], 16)}
    for entry in decoded:
        if entry.name == "SubscriptionCancelled" and entry.block_number not in block_times:
            block_times[entry.block_number] = int(rpc.get_block(entry.block_number)["timestamp"], 16)
    new = store.journal_batch(
        decoded,
        to_block=to_block,
        to_hash=str(end["hash"]).lower(),
        to_timestamp=int(end["timestamp"], 16),
        block_times=block_times,
    )
    log.info("chain.scanned", from_block=from_block, to_block=to_block, logs=len(decoded),
             new_events=new, head=head, confirmed=confirmed)
    return ScanResult(Outcome.PROGRESSED, from_block, to_block, new, caught_up=to_block >= confirmed)
