"""``blockhost recover [--dry-run]``: the daemon's start-up repair, on demand.

Rebuilds what the database forgot (a restore from an old backup, or no database at all) from
Proxmox and the chain: see :mod:`listener.reconcile.recovery`. It changes the database, so it
runs only while no listener holds it (the listener runs the same repair when it starts).
"""

from __future__ import annotations

from contextlib import closing

from listener.chain.rpc import RpcClient
from listener.config import Config
from listener.errors import UserError
from listener.reconcile.recovery import RecoverReport, recover
from listener.runtime.instance_lock import unless_listening
from listener.runtime.wiring import build_services


def run_recover(config: Config, *, dry_run: bool) -> RecoverReport:
    """Compare the database with Proxmox and the chain; repair it unless ``dry_run``."""
    if dry_run and not config.db.path.exists():
        raise UserError(f"database {config.db.path} does not exist: there is nothing to compare; "
                        "`blockhost recover` (without --dry-run) builds it from Proxmox and the "
                        "chain")
    with unless_listening(config.db.path, "recover") as holder:
        if holder is not None:
            todo = ("it repairs the database itself at start" if holder.is_listener
                    else "wait until it has finished")
            raise UserError(f"database {config.db.path} is in use by {holder}; {todo} "
                            "(or stop it, then run `blockhost recover` again)")
        services = build_services(config)
        with closing(services.store):
            rpc = RpcClient(config.chain.rpc_urls, expected_chain_id=config.chain.chain_id)
            services.store.bind_chain(rpc.chain_id())
            return recover(services, rpc, dry_run=dry_run)
