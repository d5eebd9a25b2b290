"""``blockhost mint`` (and the seed's ``blockhost-mint-nft``): prints the token id."""

from __future__ import annotations

import argparse

from listener.cli.parser import config_from


def run(args: argparse.Namespace) -> int:
    from listener.ops.mint import mint_by_hand

    print(mint_by_hand(
        config_from(args), owner_wallet=args.owner_wallet, machine_id=args.machine_id,
        user_encrypted_hex=args.user_encrypted, public_secret=args.public_secret,
        expires_at=args.expires_at))
    return 0
