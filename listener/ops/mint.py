"""``blockhost mint``: the seed's manual mint, through the daemon's transaction manager."""

from __future__ import annotations

from contextlib import closing

from listener.chain.journal import Store
from listener.config import Config
from listener.errors import UserError
from listener.runtime.wiring import build_minter
from listener.writeback.nft import manual_mint


def mint_by_hand(config: Config, *, owner_wallet: str, machine_id: str,
                 user_encrypted_hex: str, public_secret: str | None, expires_at: int) -> int:
    """Mint once per ``machine_id`` (a rerun returns the first token); returns the token id."""
    with closing(Store.open(config.db.path)) as store:
        minter = build_minter(config, store)
        if minter is None:
            raise UserError("chain.nft_contract is not set; deploy with `blockhost contracts "
                            "deploy` and put the NFT address in the config")
        return manual_mint(
            minter, config, owner_wallet=owner_wallet, machine_id=machine_id,
            user_encrypted_hex=user_encrypted_hex, public_secret=public_secret,
            expires_at=expires_at)
