"""``blockhost reorg``: show a deep-reorg halt and, on the operator's word, accept the canonical
chain (:mod:`listener.chain.deep_reorg` does the work).

Accepting rewrites facts the listener acts on, so it never runs beside a listener: it holds
the database's instance lock while it works and refuses (exit 1) when a listener holds it.
Showing, and the dry run of ``accept`` without ``--yes``, change nothing and run at any time.
"""

from __future__ import annotations

from contextlib import closing

from listener.chain.deep_reorg import Fork, accept_canonical, inspect_fork
from listener.chain.journal import Store
from listener.chain.retraction import ForkAccepted
from listener.chain.rpc import RpcClient
from listener.config import Config
from listener.errors import UserError
from listener.ops.database import open_database
from listener.runtime.instance_lock import Holder, unless_listening


def show_fork(config: Config) -> Fork:
    """The journal against the canonical chain (read only)."""
    with closing(open_database(config)) as store:
        return inspect_fork(_rpc(config, store), store, config.chain)


def accept_fork(config: Config, *, yes: bool) -> tuple[Fork, ForkAccepted | None]:
    """The fork, and with ``yes`` what accepting the canonical chain changed (None: dry run)."""
    if not yes:
        return show_fork(config), None
    with (closing(open_database(config)) as store,
          unless_listening(config.db.path, "reorg accept") as holder):
        if holder is not None:
            raise _in_use(config, holder)
        rpc = _rpc(config, store)
        fork = inspect_fork(rpc, store, config.chain)
        return fork, accept_canonical(rpc, store, config.chain, fork)


def _rpc(config: Config, store: Store) -> RpcClient:
    """A client for ``chain.rpc_urls``, on the chain this database follows."""
    rpc = RpcClient(config.chain.rpc_urls, expected_chain_id=config.chain.chain_id)
    store.bind_chain(rpc.chain_id())
    return rpc


def _in_use(config: Config, holder: Holder) -> UserError:
    todo = ("stop the listener first (`systemctl stop blockhost-listener`)" if holder.is_listener
            else "wait until it has finished")
    return UserError(f"database {config.db.path} is in use by {holder}; {todo}, then run "
                     "`blockhost reorg accept --yes` again")
