"""``blockhost keys generate|show``: the server key; both print its public key."""

from __future__ import annotations

import argparse

from listener.cli.parser import config_from


def run(args: argparse.Namespace) -> int:
    handlers = {"generate": cmd_keys_generate, "show": cmd_keys_show}
    return handlers[args.keys_command](args)


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from listener.ops.keys import generate_server_key

    print(generate_server_key(args.out))
    return 0


def cmd_keys_show(args: argparse.Namespace) -> int:
    from listener.ops.keys import server_public_key

    print(server_public_key(config_from(args)))
    return 0
