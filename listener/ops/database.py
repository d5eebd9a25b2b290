"""The listener's database as an operator command opens it: never created by the command."""

from __future__ import annotations

from listener.chain.journal import Store
from listener.config import Config
from listener.errors import UserError


def open_database(config: Config) -> Store:
    """The database ``db.path`` names; a missing one means the listener never ran here."""
    if not config.db.path.exists():
        raise UserError(f"database {config.db.path} does not exist yet; start `blockhost listen` "
                        "first or fix db.path")
    return Store.open(config.db.path)
