"""``blockhost init``: flags (and, on a terminal, questions) -> ``blockhost.yaml``.

Only what a host must decide is asked; everything else is written with its default so the
operator sees it. Nothing secret is ever asked: secrets live in files the config names.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from listener.cli.output import print_error

USAGE = 2


def _offset_or_ip(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def _bool_or_path(text: str) -> bool | str:
    lowered = text.lower()
    return {"true": True, "false": False}.get(lowered, text)


@dataclass(frozen=True)
class Flag:
    flag: str
    path: str  # dotted config key path
    help: str
    convert: Callable[[str], Any] = str
    required: bool = False  # asked on a terminal, else exit 2 when absent
    deployable: bool = False  # not required with --deploy-contracts (init fills it)

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")


FLAGS: tuple[Flag, ...] = (
    Flag("--rpc-url", "chain.rpc_urls", "RPC URL of the chain (repeat for failover)",
         required=True),
    Flag("--chain-id", "chain.chain_id", "the chain's id", int, required=True),
    Flag("--subscription-contract", "chain.subscription_contract",
         "BlockhostSubscriptions address", required=True, deployable=True),
    Flag("--nft-contract", "chain.nft_contract", "AccessCredentialNFT address", required=True,
         deployable=True),
    Flag("--start-block", "chain.start_block", "block to start reading from (the deployment "
         "block)", int, required=True, deployable=True),
    Flag("--deployer-key-file", "signer.private_key_file", "the signer key file (owns the NFT "
         "contract; deploys with --deploy-contracts)"),
    Flag("--server-key-file", "server_key_file", "the server key file (generated if absent)"),
    Flag("--api-url", "proxmox.api_url", "Proxmox API URL (https://HOST:8006)"),
    Flag("--token-id", "proxmox.token_id", "Proxmox API token id USER@REALM!TOKENID",
         required=True),
    Flag("--token-file", "proxmox.token_secret_file", "file holding the token's secret (0600)"),
    Flag("--verify-ssl", "proxmox.verify_ssl", "true, false or a CA bundle path", _bool_or_path),
    Flag("--node", "proxmox.nodes", "a node VMs may go to (repeat; default: any online)"),
    Flag("--template-vmid", "proxmox.template_vmid", "the cloud-init template's VMID", int),
    Flag("--pool", "proxmox.pool", "Proxmox resource pool of our VMs"),
    Flag("--storage", "proxmox.storage", "storage for the VMs' disks"),
    Flag("--bridge", "network.bridge", "the VMs' bridge"),
    Flag("--ip-network", "network.ip_pool.network", "IPv4 network of the VM pool (CIDR)",
         required=True),
    Flag("--ip-start", "network.ip_pool.start", "first pool address (offset or IPv4)",
         _offset_or_ip, required=True),
    Flag("--ip-end", "network.ip_pool.end", "last pool address (offset or IPv4)",
         _offset_or_ip, required=True),
    Flag("--gateway", "network.ip_pool.gateway", "the VMs' IPv4 gateway", required=True),
    Flag("--vm-rpc-url", "vm.rpc_url", "public RPC URL tenants' VMs get (default: none)"),
    Flag("--db-path", "db.path", "the daemon's SQLite database"),
)
MULTIPLE = {"--rpc-url", "--node"}
#: Written with their defaults when not given, so the operator sees them in the file.
SHOWN_DEFAULTS = ("signer.private_key_file", "server_key_file", "proxmox.api_url",
                  "proxmox.token_secret_file", "proxmox.verify_ssl", "proxmox.template_vmid",
                  "proxmox.pool", "proxmox.storage", "network.bridge", "vm.rpc_url", "db.path")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for spec in FLAGS:
        action = "append" if spec.flag in MULTIPLE else "store"
        parser.add_argument(spec.flag, action=action, type=spec.convert, default=None,
                            help=spec.help)
    parser.add_argument("--deploy-contracts", action="store_true",
                        help="deploy the contracts with the signer key (a fresh chain) and "
                             "write their addresses and block")
    parser.add_argument("--stablecoin", default=None,
                        help="with --deploy-contracts: the payment ERC20 (default: a mock)")
    parser.add_argument("--force", action="store_true",
                        help="rewrite an existing config (keys are never replaced)")
    parser.add_argument("--owner", default=None, metavar="USER",
                        help="as root: the daemon's user, who gets the key files and the "
                             "config's group (default: blockhost, if it exists)")


def run(args: argparse.Namespace) -> int:
    from listener.ops.init import InitRequest, run_init

    given = {spec.path: getattr(args, spec.dest) for spec in FLAGS
             if getattr(args, spec.dest) is not None}
    path = config_path(args)
    if not path.exists() or args.force:
        missing = missing_flags(given, deploy=args.deploy_contracts)
        if missing and _interactive():
            given.update(ask(missing))
            missing = missing_flags(given, deploy=args.deploy_contracts)
        if missing:
            print_error(f"missing {', '.join(s.flag for s in missing)}: init cannot guess "
                        "them; pass them (or run it on a terminal to be asked)")
            return USAGE
    report = run_init(InitRequest(path, with_defaults(given), deploy_contracts=args.deploy_contracts,
                                  stablecoin=args.stablecoin, force=args.force,
                                  owner=args.owner))
    print("\n".join(report.lines()))
    for problem in report.problems:
        print_error(problem)
    return 1 if report.problems else 0


def config_path(args: argparse.Namespace) -> Path:
    from listener.config import DEFAULT_CONFIG_PATH

    if args.config is not None:
        return Path(args.config)
    return Path(os.environ.get("BLOCKHOST_CONFIG", str(DEFAULT_CONFIG_PATH)))


def missing_flags(given: dict[str, Any], *, deploy: bool) -> list[Flag]:
    return [spec for spec in FLAGS if spec.required and spec.path not in given
            and not (deploy and spec.deployable)]


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def ask(missing: list[Flag]) -> dict[str, Any]:
    """One question per missing value (none of them secret); an empty answer leaves it missing."""
    answers: dict[str, Any] = {}
    for spec in missing:
        text = input(f"{spec.help} [{spec.flag}]: ").strip()
        try:
            value = spec.convert(text) if text else None
        except ValueError:
            print(f"{spec.flag}: {text!r} is not a valid value", file=sys.stderr)
            value = None
        if value is not None:
            answers[spec.path] = [value] if spec.flag in MULTIPLE else value
    return answers


def with_defaults(given: dict[str, Any]) -> dict[str, Any]:
    """The flags' values plus the shown defaults, the IP pool as one mapping, paths as text."""
    from listener.config import Config

    defaults = Config()
    values: dict[str, Any] = {}
    for path in SHOWN_DEFAULTS:
        section, _, key = path.rpartition(".")
        node: Any = getattr(defaults, section) if section else defaults
        values[path] = getattr(node, key)
    values.update(given)
    pool = {key.rpartition(".")[2]: values.pop(key) for key in list(values)
            if key.startswith("network.ip_pool.")}
    if pool:
        values["network.ip_pool"] = pool
    return {path: str(value) if isinstance(value, Path) else value
            for path, value in values.items()}
