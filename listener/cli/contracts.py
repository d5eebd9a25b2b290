"""``blockhost contracts deploy``: prints the addresses, as ``name: value`` lines or JSON."""

from __future__ import annotations

import argparse

from listener.cli.output import print_json


def run(args: argparse.Namespace) -> int:
    from listener.ops.contracts import deploy_contracts

    doc = deploy_contracts(args.rpc_url, args.private_key_file, stablecoin=args.stablecoin)
    if args.json:
        print_json(doc)
    else:
        for name, value in doc.items():
            print(f"{name}: {value}")
    return 0
