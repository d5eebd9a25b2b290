"""The write-back the reconciler and ``vm create`` need: mint one NFT, move its expiry,
replace its sealed details. :class:`listener.writeback.nft.NftMinter` is the real one
(exactly once, through the transaction manager); tests and alternatives plug in here."""

from __future__ import annotations

from typing import Protocol

from listener.writeback.nft import MintRequest


class Minter(Protocol):
    """Keyed, idempotent NFT writes: the same key never mints or updates twice."""

    def mint(self, key: str, subscription_id: int | None, request: MintRequest) -> int:
        """Mint once for ``key``; the token id comes from the receipt."""

    def update_expiration(self, subscription_id: int, token_id: int, expires_at: int) -> None:
        """Set the NFT's expiry once per (subscription, expiresAt)."""

    def update_user_encrypted(self, subscription_id: int, token_id: int, user_encrypted: bytes,
                              generation: int | str) -> None:
        """Replace the sealed connection details once per (subscription, VM generation)."""
