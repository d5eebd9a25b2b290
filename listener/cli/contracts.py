"""``blockhost contracts deploy`` (prints the addresses, as ``name: value`` lines or JSON) and
``blockhost contracts set-page`` (the NFT's default credentials page)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping

from listener.cli.output import print_json
from listener.cli.parser import config_from


def run(args: argparse.Namespace) -> int:
    if args.contracts_command == "set-page":
        return _set_page(args)
    return _deploy(args)


def _deploy(args: argparse.Namespace) -> int:
    from listener.ops.contracts import deploy_contracts, packaged_page

    page = None if args.no_default_page else packaged_page()
    if page is None and not args.no_default_page:
        print("note: this installation ships no credentials page; the NFT gets none (set one "
              "later with `blockhost contracts set-page --file PAGE.html`)", file=sys.stderr)
    doc = deploy_contracts(args.rpc_url, args.private_key_file, stablecoin=args.stablecoin,
                           page=page)
    _print(doc, as_json=args.json)
    return 0


def _set_page(args: argparse.Namespace) -> int:
    from listener.ops.contracts import set_page

    change = set_page(config_from(args), page=None if args.off else args.file)
    _print(change.to_dict(), as_json=args.json)
    return 0


def _print(doc: Mapping[str, object], *, as_json: bool) -> None:
    if as_json:
        print_json(doc)
        return
    for name, value in doc.items():
        print(f"{name}: {value}")
