"""The listener's database as an operator command opens it: never created by the command."""

from __future__ import annotations

from listener.chain.deployment import check_database, deployment_of
from listener.chain.journal import Store
from listener.config import Config
from listener.errors import UserError


def open_database(config: Config) -> Store:
    """The database ``db.path`` names; a missing one means the listener never ran here, and
    one whose header names another deployment is refused before any command reads it."""
    if not config.db.path.exists():
        raise UserError(f"database {config.db.path} does not exist yet; start `blockhost listen` "
                        "first or fix db.path")
    store = Store.open(config.db.path)
    ours = deployment_of(config, conn=store.conn)
    if ours is not None:
        try:
            check_database(store.conn, ours, config.db.path)
        except UserError:
            store.close()
            raise
    return store
