"""The ``blockhost`` argument parser: one function per command group, in the order of the help.

PROJECT.yaml lists every command and flag; tests/architecture/test_project_yaml.py compares the two.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from listener.cli.output import PROG

if TYPE_CHECKING:
    from listener.config import Config

    Commands = argparse._SubParsersAction[argparse.ArgumentParser]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Turn on-chain subscription payments into Proxmox VMs.")
    parser.add_argument("--config", type=Path, default=None,
                        help="config file (default: $BLOCKHOST_CONFIG or "
                             "/etc/blockhost/blockhost.yaml)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_group in (_add_listen, _add_status, _add_keys, _add_contracts, _add_user, _add_mint,
                      _add_replay, _add_reorg, _add_vm, _add_template, _add_gc, _add_dlq,
                      _add_backup, _add_demo, _add_init,
                      _add_web, _add_recover, _add_import_reference, _add_doctor, _add_markers):
        add_group(commands)
    return parser


def config_from(args: argparse.Namespace) -> Config:
    """The configuration ``--config`` names (else $BLOCKHOST_CONFIG, else the default path)."""
    from listener.config import load_config, require_for

    return require_for(getattr(args, "command", ""), load_config(args.config))


def _add_init(commands: Commands) -> None:
    from listener.cli.init import add_arguments

    add_arguments(commands.add_parser(
        "init", help="first run: write blockhost.yaml, make the server key, check key files"))


def _add_listen(commands: Commands) -> None:
    commands.add_parser("listen", help="run the daemon (systemd ExecStart)")


def _add_status(commands: Commands) -> None:
    status = commands.add_parser("status", help="cursor, subscriptions, VMs, NFTs")
    status.add_argument("--json", action="store_true", help="one JSON object on stdout")


def _add_keys(commands: Commands) -> None:
    keys = commands.add_parser("keys", help="the server's secp256k1 key")
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    generate = actions.add_parser("generate", help="create a new key file (mode 0600)")
    generate.add_argument("--out", type=Path, required=True, help="where to write the key")
    actions.add_parser("show", help="print the public key (0x04…) for signup pages")


def _add_contracts(commands: Commands) -> None:
    contracts = commands.add_parser("contracts", help="deploy the contracts, set the NFT page")
    actions = contracts.add_subparsers(dest="contracts_command", required=True,
                                       metavar="ACTION")
    deploy = actions.add_parser(
        "deploy", help="deploy the stablecoin mock (unless --stablecoin), subscriptions, NFT")
    deploy.add_argument("--rpc-url", required=True)
    deploy.add_argument("--private-key-file", type=Path, required=True,
                        help="deployer key (hex, mode 0600); becomes the owner")
    deploy.add_argument("--stablecoin", default=None,
                        help="use this existing ERC20 as the payment token instead of a mock")
    deploy.add_argument("--no-default-page", action="store_true",
                        help="do not store the packaged credentials page as the NFT's default")
    deploy.add_argument("--json", action="store_true", help="print addresses as JSON")
    set_page = actions.add_parser(
        "set-page", help="replace the NFT's default credentials page, or turn it off (each "
                         "part sent once through the transaction manager with the signer key)")
    page = set_page.add_mutually_exclusive_group(required=True)
    page.add_argument("--file", type=Path, help="the HTML page (at most 32 KiB)")
    page.add_argument("--off", action="store_true", help="no default page")
    set_page.add_argument("--json", action="store_true", help="one JSON object on stdout")


def _add_user(commands: Commands) -> None:
    user = commands.add_parser("user", help="the subscriber's side")
    actions = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    _add_user_subscribe(actions)
    _add_user_credentials(actions)
    _add_user_extend(actions)


def _add_user_subscribe(actions: Commands) -> None:
    subscribe = actions.add_parser(
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


def _add_user_credentials(actions: Commands) -> None:
    creds = actions.add_parser("credentials", help="decrypt the connection details in your NFT")
    creds.add_argument("--rpc-url", required=True)
    creds.add_argument("--nft-contract", required=True)
    creds.add_argument("--private-key-file", type=Path, required=True,
                       help="your wallet key (hex, mode 0600)")
    creds.add_argument("--token-id", type=int, default=None,
                       help="default: every token the wallet holds")


def _add_user_extend(actions: Commands) -> None:
    extend = actions.add_parser("extend", help="approve and pay for more days")
    extend.add_argument("--rpc-url", required=True)
    extend.add_argument("--contract", required=True, help="BlockhostSubscriptions address")
    extend.add_argument("--private-key-file", type=Path, required=True,
                        help="the paying wallet's key (hex, mode 0600)")
    extend.add_argument("--subscription-id", type=int, required=True)
    extend.add_argument("--days", type=int, required=True)


def _add_mint(commands: Commands) -> None:
    """The seed's mint flags (``blockhost-mint-nft`` runs this command)."""
    mint = commands.add_parser(
        "mint", help="mint an access NFT by hand through the transaction manager "
                     "(once per --machine-id); prints the token id")
    mint.add_argument("--owner-wallet", required=True, help="recipient address (0x…)")
    mint.add_argument("--machine-id", required=True,
                      help="VM name; a second mint with the same id returns the first token")
    mint.add_argument("--user-encrypted", default="",
                      help="0x… connection details already encrypted for the owner "
                           "(default: none)")
    mint.add_argument("--public-secret", default=None,
                      help="the message the owner signs (default: public_secret_default)")
    mint.add_argument("--expires-at", type=int, default=0,
                      help="unix time the credential expires (default 0: never)")


def _add_replay(commands: Commands) -> None:
    replay = commands.add_parser(
        "replay", help="re-process a confirmed block range (idempotent; fills journal gaps)")
    replay.add_argument("--from-block", type=int, required=True)
    replay.add_argument("--to-block", type=int, default=None,
                        help="default: the confirmed cursor")
    replay.add_argument("--dry-run", action="store_true",
                        help="report what would change, write nothing")


def _add_reorg(commands: Commands) -> None:
    reorg = commands.add_parser(
        "reorg", help="a reorg deeper than the confirmations halted effects: show it, accept "
                      "the canonical chain")
    actions = reorg.add_subparsers(dest="reorg_command", required=True, metavar="ACTION")
    show = actions.add_parser(
        "show", help="the common ancestor, stored and canonical hashes, affected subscriptions")
    show.add_argument("--json", action="store_true", help="one JSON object on stdout")
    accept = actions.add_parser(
        "accept", help="retract what the orphaned blocks said, journal the canonical chain, "
                       "re-derive the facts, clear the halt (dry run unless --yes; the "
                       "listener must be stopped)")
    accept.add_argument("--yes", action="store_true", help="really accept the canonical chain")
    accept.add_argument("--json", action="store_true", help="one JSON object on stdout")


def _add_vm(commands: Commands) -> None:
    vm = commands.add_parser("vm", help="inspect and manage subscription VMs")
    actions = vm.add_subparsers(dest="vm_command", required=True, metavar="ACTION")
    export_tf = actions.add_parser(
        "export-tf", help="write the Terraform directory for an existing VM (to adopt it)")
    export_tf.add_argument("name", metavar="NAME", help="the VM name (see `blockhost status`)")
    export_tf.add_argument("--out", type=Path, default=None,
                           help="target directory (default: proxmox.terraform_dir/NAME)")
    vm_list = actions.add_parser("list", help="the inventory with Proxmox's power state")
    vm_list.add_argument("--json", action="store_true", help="one JSON object on stdout")
    destroy = actions.add_parser(
        "destroy", help="destroy one VM after checking its ownership markers (dry run unless "
                        "--execute)")
    destroy.add_argument("name", metavar="NAME")
    destroy.add_argument("--execute", action="store_true", help="really destroy it")
    create = actions.add_parser(
        "create", help="make a VM by hand for a wallet (the seed's vm-generator); a dry run "
                       "unless --apply; one JSON result line on stdout")
    _add_vm_create_owner_flags(create)
    _add_vm_create_size_flags(create)


def _add_vm_create_owner_flags(create: argparse.ArgumentParser) -> None:
    """The seed's vm-generator flags for who gets the VM and its NFT."""
    create.add_argument("name", metavar="NAME", help="VM name (a DNS label, unique)")
    create.add_argument("--owner-wallet", required=True, help="who gets the VM and its NFT (0x…)")
    create.add_argument("--apply", action="store_true",
                        help="really create it (default: show what would be allocated)")
    create.add_argument("--mock", action="store_true",
                        help="dry run against a throw-away database (no state, Proxmox or "
                             "chain needed); cannot be combined with --apply")
    create.add_argument("--user-signature", default=None, metavar="0x…",
                        help="the owner's personal_sign of the public secret, to seal the "
                             "connection details into the NFT (visible to other local users "
                             "in the process list: prefer --user-signature-file)")
    create.add_argument("--user-signature-file", type=Path, default=None, metavar="FILE",
                        help="read the signature from FILE ('-': standard input)")
    create.add_argument("--public-secret", default=None,
                        help="the message the owner signed (default: public_secret_default)")
    create.add_argument("--skip-mint", action="store_true", help="create the VM, mint no NFT")
    create.add_argument("--nft-token-id", type=int, default=None,
                        help="with --skip-mint: the token id of an NFT minted elsewhere (for "
                             "the cloud-init template)")


def _add_vm_create_size_flags(create: argparse.ArgumentParser) -> None:
    """The seed's vm-generator flags for the VM's size, place, addresses and lifetime."""
    create.add_argument("--cpu", type=int, default=None, help="cores (default: plans.default)")
    create.add_argument("--memory", type=int, default=None,
                        help="MiB (default: plans.default)")
    create.add_argument("--disk", type=int, default=None, help="GiB (default: plans.default)")
    create.add_argument("--template-vmid", type=int, default=None,
                        help="template to clone (default: proxmox.template_vmid)")
    create.add_argument("--node", default=None, help="Proxmox node (default: placement)")
    create.add_argument("--ip", default=None, help="IPv4 address (default: next free in the pool)")
    create.add_argument("--ipv6", default=None,
                        help="IPv6 address (default: next free, when an IPv6 pool is set)")
    create.add_argument("--vmid", type=int, default=None,
                        help="VMID (default: next free in network.vmid_range)")
    create.add_argument("--expiry-days", type=int, default=30,
                        help="days until the VM and its NFT expire (default 30)")
    create.add_argument("--username", default=None, help="login user (default: vm.username)")
    create.add_argument("--tags", nargs="+", default=[], metavar="TAG",
                        help="extra Proxmox tags")
    create.add_argument("--cloud-init", default=None, metavar="TEMPLATE",
                        help="cloud-init template name (default: vm.cloud_init_template)")


def _add_template(commands: Commands) -> None:
    template = commands.add_parser("template", help="the Proxmox cloud-init template VM")
    actions = template.add_subparsers(dest="template_command", required=True, metavar="ACTION")
    build = actions.add_parser(
        "build", help="create proxmox.template_vmid from a cloud image (idempotent)")
    build.add_argument("--image", default=None,
                       help="cloud image volume STORAGE:import/FILE.qcow2 "
                            "(default: proxmox.template_image)")
    build.add_argument("--node", default=None,
                       help="node to build on (default: first of proxmox.nodes, else the "
                            "first online node)")
    build.add_argument("--name", default="blockhost-template",
                       help="VM name of the template (default: blockhost-template)")


def _add_gc(commands: Commands) -> None:
    gc = commands.add_parser(
        "gc", help="suspend expired and destroy past-grace VMs (dry run unless --execute)")
    gc.add_argument("--execute", action="store_true", help="apply the steps (default: show)")
    gc.add_argument("--grace-days", type=float, default=None,
                    help="override gc.grace_days for this run")
    only = gc.add_mutually_exclusive_group()
    only.add_argument("--suspend-only", action="store_true", help="only stop expired VMs")
    only.add_argument("--destroy-only", action="store_true",
                      help="only destroy VMs past their grace period")
    gc.add_argument("--json", action="store_true", help="one JSON object on stdout")


def _add_dlq(commands: Commands) -> None:
    dlq = commands.add_parser("dlq", help="subscriptions whose steps failed for good")
    actions = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    dlq_list = actions.add_parser("list", help="open dead letters")
    dlq_list.add_argument("--all", action="store_true", help="include retried and dropped")
    dlq_list.add_argument("--json", action="store_true", help="one JSON object on stdout")
    retry = actions.add_parser("retry", help="dispatch the subscription again")
    retry.add_argument("id", type=int, metavar="ID")
    drop = actions.add_parser(
        "drop", help="give up until new chain facts arrive for the subscription")
    drop.add_argument("id", type=int, metavar="ID")


def _add_backup(commands: Commands) -> None:
    backup = commands.add_parser(
        "backup", help="a verified copy of the database, safe while the listener runs")
    where = backup.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", type=Path, help="the backup file (created 0600)")
    where.add_argument("--dir", type=Path,
                       help="write DIR/blockhost-<UTC time>.db (DIR made 0700 if missing)")
    backup.add_argument("--keep", type=int, default=None,
                        help="with --dir: keep the newest N dated backups (default 14)")
    backup.add_argument("--force", action="store_true", help="overwrite an existing --out")
    backup.add_argument("--json", action="store_true", help="one JSON object on stdout")


def _block_number(text: str) -> int:
    """``--from-block``: a block number (argparse turns the error into a usage line, exit 2)."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a block number (0 or more)")
    return int(text)


def _add_import_reference(commands: Commands) -> None:
    imp = commands.add_parser(
        "import-reference", help="adopt the reference Blockhost system's VMs, addresses and "
                                 "NFTs (no clone, no mint)")
    imp.add_argument("--vms-json", type=Path, required=True,
                     help="the reference's VM database (/var/lib/blockhost/vms.json)")
    imp.add_argument("--config-dir", type=Path, default=Path("/etc/blockhost"),
                     help="the reference's config directory, for its blockhost.yaml "
                          "(default /etc/blockhost)")
    imp.add_argument("--dry-run", action="store_true", help="show the matches, change nothing")
    imp.add_argument("--from-block", type=_block_number, default=None,
                     help="read the adopted subscriptions' events from this block (default: "
                          "chain.start_block, 0 when unset)")
    imp.add_argument("--json", action="store_true", help="one JSON object on stdout")


def _add_recover(commands: Commands) -> None:
    recover = commands.add_parser(
        "recover", help="rebuild what the database forgot (old backup, lost file) from Proxmox "
                        "and the chain: adopt our VMs, record NFTs already minted")
    recover.add_argument("--dry-run", action="store_true", help="show the repair, change nothing")
    recover.add_argument("--json", action="store_true", help="one JSON object on stdout")


def _add_markers(commands: Commands) -> None:
    markers = commands.add_parser("markers", help="the VMs' ownership markers")
    actions = markers.add_subparsers(dest="markers_command", required=True, metavar="ACTION")
    migrate = actions.add_parser(
        "migrate", help="add our deployment id to VMs made before ids that our inventory knows")
    migrate.add_argument("--dry-run", action="store_true", help="show the changes, make none")
    migrate.add_argument("--json", action="store_true", help="one JSON object on stdout")


def _add_web(commands: Commands) -> None:
    web = commands.add_parser("web", help="the subscriber's signup, renew and credentials pages")
    actions = web.add_subparsers(dest="web_command", required=True, metavar="ACTION")
    serve = actions.add_parser("serve", help="serve the pages, their config.json and /status")
    serve.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT",
                       help="address to bind (default 127.0.0.1:8080)")
    serve.add_argument("--tls-cert", type=Path, metavar="FILE",
                       help="serve HTTPS with this PEM certificate (chain); needs --tls-key")
    serve.add_argument("--tls-key", type=Path, metavar="FILE",
                       help="the certificate's PEM private key (mode 0600)")
    export = actions.add_parser("export", help="write the pages + config.json for any web server")
    export.add_argument("--out", type=Path, required=True, help="directory to write into")


def _add_doctor(commands: Commands) -> None:
    doctor = commands.add_parser(
        "doctor", help="check config, key files, chain, contracts, Proxmox and this host; "
                       "exit 1 if anything fails")
    doctor.add_argument("--json", action="store_true", help="a JSON list of checks on stdout")


def _add_demo(commands: Commands) -> None:
    demo = commands.add_parser("demo", help="end-to-end on a local anvil + the PVE simulator")
    demo.add_argument("--workdir", type=Path, default=None,
                      help="keep logs and state here (default: a temporary directory)")
