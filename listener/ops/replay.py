"""``blockhost replay``: re-process a confirmed block range of this host's journal."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, closing

from listener.chain.replay import ReplayReport, plan_range, replay
from listener.chain.rpc import RpcClient
from listener.config import Config
from listener.ops.database import open_database

#: Told (blocks done, events seen) after each range.
OnProgress = Callable[[int, int], None]
#: Given the number of blocks, opens a progress display for the run.
ProgressDisplay = Callable[[int], AbstractContextManager[OnProgress]]


def run_replay(config: Config, *, from_block: int, to_block: int | None, dry_run: bool,
               progress: ProgressDisplay) -> ReplayReport:
    """Replay ``from_block..to_block`` (default: the confirmed cursor) of the configured
    chain; the chain id must be the one the database follows."""
    with closing(open_database(config)) as store:
        rpc = RpcClient(config.chain.rpc_urls, expected_chain_id=config.chain.chain_id)
        store.bind_chain(rpc.chain_id())
        first, last = plan_range(store, from_block, to_block)
        with progress(last - first + 1) as on_progress:
            return replay(rpc, store, config.chain, first, last, dry_run=dry_run,
                          on_progress=on_progress)
