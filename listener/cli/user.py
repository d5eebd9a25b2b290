"""``blockhost user subscribe|credentials|extend``: the subscriber's side; JSON lines out."""

from __future__ import annotations

import argparse

from listener.cli.output import print_json


def run(args: argparse.Namespace) -> int:
    handlers = {"subscribe": cmd_user_subscribe, "credentials": cmd_user_credentials,
                "extend": cmd_user_extend}
    return handlers[args.user_command](args)


def cmd_user_subscribe(args: argparse.Namespace) -> int:
    from listener.userkit.wallet import subscribe_with_key_file

    result = subscribe_with_key_file(
        args.rpc_url, args.private_key_file, contract=args.contract,
        server_public_key=args.server_public_key, plan_id=args.plan_id, days=args.days,
        legacy=args.legacy, public_secret=args.public_secret)
    print_json(result.to_json())
    return 0


def cmd_user_credentials(args: argparse.Namespace) -> int:
    """One line per token, printed as each is decrypted."""
    from listener.userkit.wallet import credentials_with_key_file

    for token_id, details in credentials_with_key_file(
            args.rpc_url, args.private_key_file, nft_contract=args.nft_contract,
            token_id=args.token_id):
        print_json({"token_id": token_id, "hostname": details.hostname, "port": details.port,
                    "username": details.username}, sort_keys=False)
    return 0


def cmd_user_extend(args: argparse.Namespace) -> int:
    from listener.userkit.wallet import extend_with_key_file

    result = extend_with_key_file(args.rpc_url, args.private_key_file, contract=args.contract,
                                  subscription_id=args.subscription_id, days=args.days)
    print_json(result.to_json())
    return 0
