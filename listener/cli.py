"""``blockhost`` command line. Exit codes: 0 ok, 1 failure, 2 usage.

Every error a user can cause prints one line (what, why, what to do) on stderr, never a
traceback. Machine-readable output goes to stdout; logs go to stderr (stdout for `listen`,
where journald collects it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from listener.errors import BlockhostError, UserError
from provisioner.errors import ProvisionerError

PROG = "blockhost"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Turn on-chain subscription payments into Proxmox VMs.")
    parser.add_argument("--config", type=Path, default=None,
                        help="config file (default: $BLOCKHOST_CONFIG or "
                             "/etc/blockhost/blockhost.yaml)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("listen", help="run the daemon (systemd ExecStart)")

    status = commands.add_parser("status", help="cursor, subscriptions, VMs, NFTs")
    status.add_argument("--json", action="store_true", help="one JSON object on stdout")

    keys = commands.add_parser("keys", help="the server's secp256k1 key")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    generate = key_commands.add_parser("generate", help="create a new key file (mode 0600)")
    generate.add_argument("--out", type=Path, required=True, help="where to write the key")
    key_commands.add_parser("show", help="print the public key (0x04…) for signup pages")

    contracts = commands.add_parser("contracts", help="deploy the contracts")
    contract_commands = contracts.add_subparsers(dest="contracts_command", required=True,
                                                 metavar="ACTION")
    deploy = contract_commands.add_parser(
        "deploy", help="deploy the stablecoin mock (unless --stablecoin), subscriptions, NFT")
    deploy.add_argument("--rpc-url", required=True)
    deploy.add_argument("--private-key-file", type=Path, required=True,
                        help="deployer key (hex, mode 0600); becomes the owner")
    deploy.add_argument("--stablecoin", default=None,
                        help="use this existing ERC20 as the payment token instead of a mock")
    deploy.add_argument("--json", action="store_true", help="print addresses as JSON")

    user = commands.add_parser("user", help="the subscriber's side")
    user_commands = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    subscribe = user_commands.add_parser(
        "subscribe", help="sign, encrypt to the server key, approve and buy a subscription")
    subscribe.add_argument("--rpc-url", required=True)
    subscribe.add_argument("--contract", required=True, help="BlockhostSubscriptions address")
    subscribe.add_argument("--server-public-key", required=True,
                           help="0x04… from `blockhost keys show` on the server")
    subscribe.add_argument("--private-key-file", type=Path, required=True,
                           help="your wallet key (hex, mode 0600)")
    subscribe.add_argument("--plan-id", type=int, required=True)
    subscribe.add_argument("--days", type=int, required=True)
    subscribe.add_argument("--legacy", action="store_true",
                           help="encrypt the bare signature over the default public secret")
    subscribe.add_argument("--public-secret", default="blockhost-access",
                           help="the server's public_secret_default (only with --legacy)")
    creds = user_commands.add_parser("credentials",
                                     help="decrypt the connection details in your NFT")
    creds.add_argument("--rpc-url", required=True)
    creds.add_argument("--nft-contract", required=True)
    creds.add_argument("--private-key-file", type=Path, required=True,
                       help="your wallet key (hex, mode 0600)")
    creds.add_argument("--token-id", type=int, default=None,
                       help="default: every token the wallet holds")

    replay = commands.add_parser(
        "replay", help="re-process a confirmed block range (idempotent; fills journal gaps)")
    replay.add_argument("--from-block", type=int, required=True)
    replay.add_argument("--to-block", type=int, default=None,
                        help="default: the confirmed cursor")
    replay.add_argument("--dry-run", action="store_true",
                        help="report what would change, write nothing")

    demo = commands.add_parser("demo", help="end-to-end on a local anvil + the PVE simulator")
    demo.add_argument("--workdir", type=Path, default=None,
                      help="keep logs and state here (default: a temporary directory)")
    return parser


def _load_config(args: argparse.Namespace):  # noqa: ANN202 - Config, imported lazily
    from listener.config import load_config

    return load_config(args.config)


def _configure_logs(command: str) -> None:
    from listener.logging_setup import configure

    configure(sys.stdout if command == "listen" else sys.stderr)


def cmd_listen(args: argparse.Namespace) -> int:
    from listener.daemon import Daemon

    return Daemon(_load_config(args)).run()


def cmd_status(args: argparse.Namespace) -> int:
    from listener.status import render_text, snapshot
    from listener.store import Store
    from provisioner.inventory import Inventory

    config = _load_config(args)
    if not config.db.path.exists():
        raise UserError(f"database {config.db.path} does not exist yet; start `blockhost listen` "
                        "first or fix db.path")
    store = Store.open(config.db.path)
    try:
        doc = snapshot(config, store, Inventory(store.conn))
    finally:
        store.close()
    print(json.dumps(doc, sort_keys=True) if args.json else render_text(doc))
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from listener.keys import generate_key_file, load_private_key, public_key_hex

    if args.keys_command == "generate":
        key = generate_key_file(args.out)
        print(public_key_hex(key))
        return 0
    config = _load_config(args)
    print(public_key_hex(load_private_key(config.server_key_file, what="server key")))
    return 0


def cmd_contracts(args: argparse.Namespace) -> int:
    from web3 import Web3

    from listener.contracts import deploy_all
    from listener.keys import load_private_key

    key = load_private_key(args.private_key_file, what="deployer key")
    w3 = Web3(Web3.HTTPProvider(args.rpc_url, request_kwargs={"timeout": 60}))
    if not w3.is_connected():
        raise UserError(f"cannot reach RPC endpoint {args.rpc_url}; check --rpc-url")
    deployment = deploy_all(w3, "0x" + key.hex(), stablecoin=args.stablecoin)
    doc = deployment.to_dict()
    if args.json:
        print(json.dumps(doc, sort_keys=True))
    else:
        for name, value in doc.items():
            print(f"{name}: {value}")
    return 0


def cmd_user(args: argparse.Namespace) -> int:
    from web3 import Web3

    from listener.keys import load_private_key
    from listener.user import credentials, load_account, parse_server_public_key, subscribe, tokens_of

    account = load_account(load_private_key(args.private_key_file, what="wallet key"))
    w3 = Web3(Web3.HTTPProvider(args.rpc_url, request_kwargs={"timeout": 60}))
    if args.user_command == "subscribe":
        result = subscribe(
            w3, account, subscription_contract=args.contract,
            server_public_key=parse_server_public_key(args.server_public_key),
            plan_id=args.plan_id, days=args.days, legacy=args.legacy,
            public_secret_default=args.public_secret)
        print(json.dumps(result.to_json(), sort_keys=True))
        return 0
    token_ids = [args.token_id] if args.token_id is not None else tokens_of(
        w3, args.nft_contract, account.address)
    if not token_ids:
        raise UserError(f"wallet {account.address} holds no access NFT on {args.nft_contract}")
    for token_id in token_ids:
        details = credentials(w3, account, nft_contract=args.nft_contract, token_id=token_id)
        print(json.dumps({"token_id": token_id, "hostname": details.hostname,
                          "port": details.port, "username": details.username}))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from listener.replay import plan_range, progress_reporter, replay
    from listener.rpc import RpcClient
    from listener.store import Store

    config = _load_config(args)
    if not config.db.path.exists():
        raise UserError(f"database {config.db.path} does not exist yet; start `blockhost listen` "
                        "first or fix db.path")
    store = Store.open(config.db.path)
    try:
        rpc = RpcClient(config.chain.rpc_urls, expected_chain_id=config.chain.chain_id)
        store.bind_chain(rpc.chain_id())
        first, last = plan_range(store, args.from_block, args.to_block)
        with progress_reporter(last - first + 1) as on_progress:
            report = replay(rpc, store, config.chain, first, last, dry_run=args.dry_run,
                            on_progress=on_progress)
    finally:
        store.close()
    print(json.dumps(report.to_json(), sort_keys=True))
    if report.conflicts:
        print(f"{PROG}: error: {report.conflicts} event(s) in the range sit in blocks whose hash "
              "differs from the journal (a fork deeper than the confirmation depth); see the "
              "logs and `blockhost status`", file=sys.stderr)
        return 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from listener.demo import run_demo

    return run_demo(args.workdir)


HANDLERS = {
    "listen": cmd_listen,
    "status": cmd_status,
    "keys": cmd_keys,
    "contracts": cmd_contracts,
    "user": cmd_user,
    "replay": cmd_replay,
    "demo": cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on usage errors
    _configure_logs(args.command)
    try:
        return HANDLERS[args.command](args)
    except BlockhostError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except ProvisionerError as exc:
        print(f"{PROG}: error: Proxmox: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (ConnectionError, OSError) as exc:
        print(f"{PROG}: error: {type(exc).__name__}: {exc}; check the addresses and that the "
              "service is running", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - last resort: one line, traceback on request
        if os.environ.get("BLOCKHOST_DEBUG"):
            raise
        print(f"{PROG}: error: unexpected {type(exc).__name__}: {str(exc)[:300]}; rerun with "
              "BLOCKHOST_DEBUG=1 for a traceback and report it", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
