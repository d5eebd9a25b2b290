"""Which deployment this is: a short id derived from the chain and the two contracts.

Two deployments may share one Proxmox cluster (a testnet and a mainnet listener with the
default tag, pool and name prefix), and one database may be pointed at a new contract by
mistake. The id tells them apart: it goes into every VM's ownership markers and into the
database header, and anything naming another id is refused.

Formula (reproducible with ``cast keccak $(cast abi-encode "f(uint256,address,address)"
<chain id> <subscription contract> <nft contract or 0x0>)``)::

    deployment_id = hex(keccak256(abi.encode(uint256 chain_id,
                                             address subscription_contract,
                                             address nft_contract or address(0))))[0:8]
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from eth_abi.abi import encode
from web3 import Web3

from listener.config import Config
from listener.errors import UserError
from provisioner.storage.sqlite_db import transaction

ZERO_ADDRESS = "0x" + "00" * 20


def deployment_id(chain_id: int, subscription_contract: str, nft_contract: str | None) -> str:
    """The 8-hex-digit id of (chain id, subscription contract, NFT contract)."""
    encoded = encode(["uint256", "address", "address"],
                     [chain_id, Web3.to_checksum_address(subscription_contract),
                      Web3.to_checksum_address(nft_contract or ZERO_ADDRESS)])
    return bytes(Web3.keccak(encoded))[:4].hex()


@dataclass(frozen=True)
class Deployment:
    """One deployment: its chain, its contracts and their id."""

    chain_id: int
    subscription_contract: str
    nft_contract: str | None

    @property
    def id(self) -> str:
        return deployment_id(self.chain_id, self.subscription_contract, self.nft_contract)

    def describe(self) -> str:
        nft = self.nft_contract or "none"
        return (f"{self.id} (chain {self.chain_id}, subscriptions "
                f"{self.subscription_contract}, NFT {nft})")


def deployment_of(config: Config, chain_id: int | None = None,
                  conn: sqlite3.Connection | None = None) -> Deployment | None:
    """This config's deployment; None without a subscription contract (nothing to serve) or
    while the chain id is unknown (a backend without an id owns no VM that carries one).

    The chain id is the one given (the RPC's), else the config's, else the one the
    database already follows."""
    chain = config.chain
    known = chain_id or chain.chain_id or (_bound_chain_id(conn) if conn is not None else None)
    if not chain.subscription_contract or known is None:
        return None
    return Deployment(int(known), Web3.to_checksum_address(chain.subscription_contract),
                      Web3.to_checksum_address(chain.nft_contract) if chain.nft_contract else None)


def _bound_chain_id(conn: sqlite3.Connection) -> int | None:
    row = conn.execute("SELECT chain_id FROM chain_state WHERE id = 1").fetchone()
    return None if row is None or row[0] is None else int(row[0])


def recorded(conn: sqlite3.Connection) -> Deployment | None:
    """The database header, None while it has none (a new or pre-upgrade database)."""
    row = conn.execute("SELECT chain_id, subscription_contract, nft_contract"
                       " FROM deployment WHERE id = 1").fetchone()
    if row is None:
        return None
    return Deployment(int(row[0]), str(row[1]), str(row[2]) if row[2] else None)


def check_database(conn: sqlite3.Connection, ours: Deployment, path: object) -> None:
    """Refuse a database whose header names another deployment (one line, both ids)."""
    theirs = recorded(conn)
    if theirs is not None and theirs.id != ours.id:
        raise UserError(
            f"database {path} belongs to deployment {theirs.describe()}, but this config is "
            f"deployment {ours.describe()}; point db.path at that deployment's database (or "
            "a new file) or fix chain.chain_id / chain.subscription_contract / chain.nft_contract")


def bind_database(conn: sqlite3.Connection, ours: Deployment, path: object) -> None:
    """Check the header, or write it once: on a new database, and on the first open after
    the upgrade that introduced it (refused when the journal holds another contract's
    events, since then the database was made for another deployment)."""
    with transaction(conn):
        check_database(conn, ours, path)
        if recorded(conn) is not None:
            return
        _refuse_foreign_journal(conn, ours, path)
        conn.execute(
            "INSERT INTO deployment (id, deployment_id, chain_id, subscription_contract,"
            " nft_contract, written_at) VALUES (1, ?, ?, ?, ?, ?)",
            (ours.id, ours.chain_id, ours.subscription_contract, ours.nft_contract,
             int(time.time())))


def _refuse_foreign_journal(conn: sqlite3.Connection, ours: Deployment, path: object) -> None:
    bound = _bound_chain_id(conn)
    if bound is not None and bound != ours.chain_id:
        raise UserError(f"database {path} follows chain {bound}, but this config is "
                        f"deployment {ours.describe()}; point db.path at a new file or fix "
                        "chain.chain_id")
    row = conn.execute("SELECT address FROM events WHERE lower(address) != lower(?) LIMIT 1",
                       (ours.subscription_contract,)).fetchone()
    if row is not None:
        raise UserError(f"database {path} journaled events of contract {row[0]}, but this "
                        f"config is deployment {ours.describe()}; point db.path at a new "
                        "file or fix chain.subscription_contract")
