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
import time
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
    extend = user_commands.add_parser("extend", help="approve and pay for more days")
    extend.add_argument("--rpc-url", required=True)
    extend.add_argument("--contract", required=True, help="BlockhostSubscriptions address")
    extend.add_argument("--private-key-file", type=Path, required=True,
                        help="the paying wallet's key (hex, mode 0600)")
    extend.add_argument("--subscription-id", type=int, required=True)
    extend.add_argument("--days", type=int, required=True)

    mint = commands.add_parser(
        "mint", help="mint an access NFT by hand through the transaction manager "
                     "(once per --machine-id); prints the token id")
    add_mint_arguments(mint)

    replay = commands.add_parser(
        "replay", help="re-process a confirmed block range (idempotent; fills journal gaps)")
    replay.add_argument("--from-block", type=int, required=True)
    replay.add_argument("--to-block", type=int, default=None,
                        help="default: the confirmed cursor")
    replay.add_argument("--dry-run", action="store_true",
                        help="report what would change, write nothing")

    add_vm_commands(commands)
    add_template_commands(commands)

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

    dlq = commands.add_parser("dlq", help="subscriptions whose steps failed for good")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    dlq_list = dlq_commands.add_parser("list", help="open dead letters")
    dlq_list.add_argument("--all", action="store_true", help="include retried and dropped")
    dlq_list.add_argument("--json", action="store_true", help="one JSON object on stdout")
    dlq_retry = dlq_commands.add_parser("retry", help="dispatch the subscription again")
    dlq_retry.add_argument("id", type=int, metavar="ID")
    dlq_drop = dlq_commands.add_parser(
        "drop", help="give up until new chain facts arrive for the subscription")
    dlq_drop.add_argument("id", type=int, metavar="ID")

    demo = commands.add_parser("demo", help="end-to-end on a local anvil + the PVE simulator")
    demo.add_argument("--workdir", type=Path, default=None,
                      help="keep logs and state here (default: a temporary directory)")
    return parser


def _load_config(args: argparse.Namespace):  # noqa: ANN202 - Config, imported lazily
    from listener.config import load_config

    return load_config(args.config)


def _open_store(config):  # noqa: ANN001, ANN202 - Config/Store imported lazily
    from listener.chain.journal import Store

    if not config.db.path.exists():
        raise UserError(f"database {config.db.path} does not exist yet; start `blockhost listen` "
                        "first or fix db.path")
    return Store.open(config.db.path)


def _configure_logs(command: str) -> None:
    from listener.runtime.logging_setup import configure

    configure(sys.stdout if command == "listen" else sys.stderr)


def cmd_listen(args: argparse.Namespace) -> int:
    from listener.runtime.daemon import Daemon

    return Daemon(_load_config(args)).run()


def cmd_status(args: argparse.Namespace) -> int:
    from listener.ops.status import render_text, snapshot
    from provisioner.inventory import Inventory

    config = _load_config(args)
    store = _open_store(config)
    try:
        doc = snapshot(config, store, Inventory(store.conn))
    finally:
        store.close()
    print(json.dumps(doc, sort_keys=True) if args.json else render_text(doc))
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from listener.crypto.key_files import generate_key_file, load_private_key, public_key_hex

    if args.keys_command == "generate":
        key = generate_key_file(args.out)
        print(public_key_hex(key))
        return 0
    config = _load_config(args)
    print(public_key_hex(load_private_key(config.server_key_file, what="server key")))
    return 0


def cmd_contracts(args: argparse.Namespace) -> int:
    from web3 import Web3

    from listener.chain.contracts import deploy_all
    from listener.crypto.key_files import load_private_key

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

    from listener.crypto.key_files import load_private_key
    from listener.userkit.subscriber import credentials, load_account, parse_server_public_key, subscribe, tokens_of

    account = load_account(load_private_key(args.private_key_file, what="wallet key"))
    w3 = Web3(Web3.HTTPProvider(args.rpc_url, request_kwargs={"timeout": 60}))
    if args.user_command == "extend":
        from listener.userkit.subscriber import extend

        extended = extend(w3, account, subscription_contract=args.contract,
                          subscription_id=args.subscription_id, days=args.days)
        print(json.dumps(extended.to_json(), sort_keys=True))
        return 0
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
    from listener.chain.replay import plan_range, progress_reporter, replay
    from listener.chain.rpc import RpcClient

    config = _load_config(args)
    store = _open_store(config)
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


def add_vm_commands(commands: argparse._SubParsersAction) -> None:  # noqa: SLF001
    """The ``vm`` group; add a subcommand here and its handler to VM_HANDLERS."""
    vm = commands.add_parser("vm", help="inspect and manage subscription VMs")
    vm_commands = vm.add_subparsers(dest="vm_command", required=True, metavar="ACTION")
    export_tf = vm_commands.add_parser(
        "export-tf", help="write the Terraform directory for an existing VM (to adopt it)")
    export_tf.add_argument("name", metavar="NAME", help="the VM name (see `blockhost status`)")
    export_tf.add_argument("--out", type=Path, default=None,
                           help="target directory (default: proxmox.terraform_dir/NAME)")
    vm_list = vm_commands.add_parser("list", help="the inventory with Proxmox's power state")
    vm_list.add_argument("--json", action="store_true", help="one JSON object on stdout")
    vm_destroy = vm_commands.add_parser(
        "destroy", help="destroy one VM after checking its ownership markers (dry run unless "
                        "--execute)")
    vm_destroy.add_argument("name", metavar="NAME")
    vm_destroy.add_argument("--execute", action="store_true", help="really destroy it")
    add_vm_create_arguments(vm_commands.add_parser(
        "create", help="make a VM by hand for a wallet (the seed's vm-generator); a dry run "
                       "unless --apply; one JSON result line on stdout"))


def add_vm_create_arguments(create: argparse.ArgumentParser) -> None:
    """The seed's vm-generator flags (``blockhost vm create`` and ``blockhost-vm-create``)."""
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


def cmd_vm_export_tf(args: argparse.Namespace) -> int:
    from listener.reconcile.reconciler import ref_of
    from listener.reconcile.vm_spec import vm_spec
    from listener.runtime.wiring import build_backend, build_terraform_backend_for, pools_from_config
    from provisioner.inventory import Inventory
    from provisioner.terraform.backend import TerraformBackend
    from provisioner.terraform.export import export_vm, read_local_snippet

    config = _load_config(args)
    store = _open_store(config)
    try:
        record = Inventory(store.conn).get(args.name)
        sub = (store.subscription(record.subscription_id)
               if record is not None and record.subscription_id is not None else None)
    finally:
        store.close()
    if record is None or record.state == "reserved" or record.subscription_id is None:
        raise UserError(f"no created VM named {args.name!r} with a subscription in the "
                        "inventory; check the name with `blockhost status`")
    backend = build_backend(config)
    if not isinstance(backend, TerraformBackend):
        backend = build_terraform_backend_for(config, backend)
    size = config.plan_size(sub.plan_id) if sub is not None else config.plans["default"]
    spec = vm_spec(config, record, pools_from_config(config), size=size,
                   user_data=read_local_snippet(config.proxmox.snippets_dir, record.name))
    directory = export_vm(backend, spec, ref_of(record), out_dir=args.out)
    print(directory)
    return 0


def add_template_commands(commands: argparse._SubParsersAction) -> None:  # noqa: SLF001
    """The ``template`` group (provisioner.proxmox.template_build)."""
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


def cmd_template(args: argparse.Namespace) -> int:
    from listener.runtime.wiring import build_api_backend
    from provisioner.proxmox.template_build import TemplateSpec, build_template

    config = _load_config(args)
    px = config.proxmox
    image = args.image or px.template_image
    if not image:
        raise UserError("no cloud image given; pass --image STORAGE:import/FILE.qcow2 or set "
                        "proxmox.template_image")
    api = build_api_backend(config)
    node = args.node or (px.nodes[0] if px.nodes else None) or next(iter(api.online_nodes()), None)
    if not node:
        raise UserError("no online Proxmox node to build the template on; pass --node")
    spec = TemplateSpec(vmid=px.template_vmid, node=node, image=image, storage=px.storage,
                        name=args.name, bridge=config.network.bridge, tag=px.tag)
    try:
        spec.validate()
    except ValueError as exc:
        raise UserError(f"template build: {exc}") from None
    result = build_template(api, spec)
    print(json.dumps({"vmid": result.vmid, "node": result.node, "action": result.action}))
    return 0


def cmd_vm_list(args: argparse.Namespace) -> int:
    from listener.ops.vm_admin import list_vms, render_rows
    from listener.runtime.wiring import build_backend
    from provisioner.inventory import Inventory

    config = _load_config(args)
    store = _open_store(config)
    try:
        rows = list_vms(Inventory(store.conn), build_backend(config))
    finally:
        store.close()
    if args.json:
        print(json.dumps({"vms": [r.to_json() for r in rows]}, sort_keys=True))
    else:
        print(render_rows(rows))
    return 0


def cmd_vm_destroy(args: argparse.Namespace) -> int:
    from listener.ops.vm_admin import check_destroyable, destroy_vm
    from listener.runtime.wiring import build_backend
    from provisioner.inventory import Inventory

    config = _load_config(args)
    store = _open_store(config)
    try:
        inventory = Inventory(store.conn)
        record = inventory.get(args.name)
        if record is None:
            raise UserError(f"no live VM named {args.name!r} in the inventory; see "
                            "`blockhost vm list`")
        check_destroyable(store, record, grace_seconds=config.grace_seconds)
        if not args.execute:
            print(f"would destroy {record.name} (vmid {record.vmid} on {record.node}, ip "
                  f"{record.ipv4}) after checking its ownership markers; add --execute")
            return 0
        destroy_vm(store, inventory, build_backend(config), args.name, config=config)
    finally:
        store.close()
    print(f"destroyed {record.name} (vmid {record.vmid}); its VMID and addresses are released")
    return 0


def _read_user_signature(args: argparse.Namespace) -> str | None:
    if args.user_signature is not None and args.user_signature_file is not None:
        raise UserError("give --user-signature or --user-signature-file, not both")
    if args.user_signature is not None:
        print(f"{PROG}: warning: --user-signature is visible in the process list; use "
              "--user-signature-file next time", file=sys.stderr)
        return str(args.user_signature).strip()
    if args.user_signature_file is None:
        return None
    if str(args.user_signature_file) == "-":
        return sys.stdin.readline().strip()
    try:
        return args.user_signature_file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read --user-signature-file {args.user_signature_file}: "
                        f"{exc.__class__.__name__}") from None


def cmd_vm_create(args: argparse.Namespace) -> int:
    import tempfile

    from listener.runtime.daemon import place_on
    from listener.chain.journal import Store
    from listener.ops.vm_create import CreateRequest, ManualVmCreator, Placement, validate
    from listener.runtime.wiring import build_backend, build_minter, pools_from_config
    from provisioner.inventory import Inventory

    if args.mock and args.apply:
        print(f"{PROG}: error: --mock uses a throw-away database, so an applied VM would be "
              "tracked nowhere; drop --mock to create it, or --apply for a dry run",
              file=sys.stderr)
        return 2
    config = _load_config(args)
    default = config.plans["default"]
    request = CreateRequest(
        name=args.name, owner_wallet=args.owner_wallet,
        cores=default.cores if args.cpu is None else args.cpu,
        memory_mb=default.memory if args.memory is None else args.memory,
        disk_gb=default.disk if args.disk is None else args.disk,
        template_vmid=(config.proxmox.template_vmid if args.template_vmid is None
                       else args.template_vmid),
        username=args.username or config.vm.username,
        cloud_init=args.cloud_init or config.vm.cloud_init_template,
        expiry_days=args.expiry_days, tags=tuple(args.tags), skip_mint=args.skip_mint,
        public_secret=(config.public_secret_default if args.public_secret is None
                       else args.public_secret),
        nft_token_id=args.nft_token_id)
    placement = Placement(node=args.node, vmid=args.vmid, ipv4=args.ip, ipv6=args.ipv6)
    signature_hex = _read_user_signature(args)
    validate(request, placement, signature_hex=signature_hex)
    pools = pools_from_config(config)
    if not args.apply:
        with tempfile.TemporaryDirectory(prefix="blockhost-mock-") as scratch:
            # nothing is written to the real database; none yet = nothing allocated yet
            fresh = args.mock or not config.db.path.exists()
            store = Store.open(Path(scratch) / "mock.db" if fresh else config.db.path)
            try:
                creator = ManualVmCreator(config, Inventory(store.conn), pools, backend=None,
                                          minter=None, chain_id=None, choose_node=None)
                result = creator.plan(request, placement)
            finally:
                store.close()
        result.mock = args.mock
        print(result.to_json_line())
        return 0
    backend = build_backend(config)
    store = Store.open(config.db.path)
    try:
        minter = None if request.skip_mint else build_minter(config, store)
        chain_id = config.chain.chain_id
        if minter is not None and chain_id is None:
            chain_id = int(minter.txm.w3.eth.chain_id)
        creator = ManualVmCreator(
            config, Inventory(store.conn), pools, backend=backend, minter=minter,
            chain_id=chain_id, choose_node=lambda size: place_on(config, backend, size))
        signature = bytes.fromhex(signature_hex[2:]) if signature_hex else None
        result = creator.apply(request, placement, signature=signature)
    finally:
        store.close()
    for note in result.notes:
        print(f"{PROG}: note: {note}", file=sys.stderr)
    print(result.to_json_line())
    return 0


def vm_create_alias(argv: Sequence[str] | None = None) -> int:
    """``blockhost-vm-create``: the seed's vm-generator name for ``blockhost vm create``."""
    return run_alias(["vm", "create"], argv)


VM_HANDLERS = {
    "export-tf": cmd_vm_export_tf,
    "list": cmd_vm_list,
    "destroy": cmd_vm_destroy,
    "create": cmd_vm_create,
}


def cmd_vm(args: argparse.Namespace) -> int:
    return VM_HANDLERS[args.vm_command](args)


def add_mint_arguments(parser: argparse.ArgumentParser) -> None:
    """The seed's mint flags (shared by `blockhost mint` and `blockhost-mint-nft`)."""
    parser.add_argument("--owner-wallet", required=True, help="recipient address (0x…)")
    parser.add_argument("--machine-id", required=True,
                        help="VM name; a second mint with the same id returns the first token")
    parser.add_argument("--user-encrypted", default="",
                        help="0x… connection details already encrypted for the owner "
                             "(default: none)")
    parser.add_argument("--public-secret", default=None,
                        help="the message the owner signs (default: public_secret_default)")
    parser.add_argument("--expires-at", type=int, default=0,
                        help="unix time the credential expires (default 0: never)")


def cmd_mint(args: argparse.Namespace) -> int:
    from listener.writeback.nft import manual_mint
    from listener.chain.journal import Store
    from listener.runtime.wiring import build_minter

    config = _load_config(args)
    store = Store.open(config.db.path)
    try:
        minter = build_minter(config, store)
        if minter is None:
            raise UserError("chain.nft_contract is not set; deploy with `blockhost contracts "
                            "deploy` and put the NFT address in the config")
        token_id = manual_mint(
            minter, config, owner_wallet=args.owner_wallet, machine_id=args.machine_id,
            user_encrypted_hex=args.user_encrypted, public_secret=args.public_secret,
            expires_at=args.expires_at)
    finally:
        store.close()
    print(token_id)
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    from listener.reconcile.decide import Action
    from listener.ops.gc import GcMode, execute, plan, plan_manual, render
    from listener.reconcile.reconciler import Reconciler
    from listener.ops.vm_admin import destroy_vm, stop_vm
    from listener.runtime.wiring import build_services
    from provisioner.inventory import Inventory

    config = _load_config(args)
    if args.grace_days is not None and args.grace_days < 0:
        raise UserError("--grace-days must be >= 0")
    grace = (int(args.grace_days * 86400) if args.grace_days is not None
             else config.grace_seconds)
    mode = (GcMode.SUSPEND_ONLY if args.suspend_only
            else GcMode.DESTROY_ONLY if args.destroy_only else GcMode.ALL)
    store = _open_store(config)
    try:
        inventory = Inventory(store.conn)
        chain_time = store.chain_state().chain_time
        if chain_time is None and store.subscriptions():
            raise UserError("no confirmed block yet, so no chain time to judge expiry by; let "
                            "`blockhost listen` run first")
        verdicts = [] if chain_time is None else plan(
            store, inventory, chain_time=chain_time, grace_seconds=grace, mode=mode)
        # VMs made by `vm create` have no chain facts: their expiry is wall-clock time
        verdicts += plan_manual(inventory, now=int(time.time()), grace_seconds=grace, mode=mode)
    finally:
        store.close()
    if args.execute and verdicts:
        services = build_services(config, with_chain=False)
        try:
            reconciler = Reconciler(services, choose_node=lambda _size: "")

            def apply_manual(name: str, action: Action) -> None:
                if action is Action.DESTROY:
                    destroy_vm(services.store, services.inventory, services.backend, name,
                               config=config)
                else:
                    stop_vm(services.inventory, services.backend, name)

            verdicts = execute(verdicts, reconciler.apply_one, apply_manual)
        finally:
            services.store.close()
    failed = [v for v in verdicts if v.result.startswith("failed")]
    if args.json:
        print(json.dumps({"chain_time": chain_time, "grace_seconds": grace,
                          "execute": args.execute, "mode": mode.value,
                          "steps": [v.to_json() for v in verdicts]}, sort_keys=True))
    else:
        print(render(verdicts, execute_mode=args.execute))
    return 1 if failed else 0


def cmd_dlq(args: argparse.Namespace) -> int:
    from listener.reconcile.dead_letters import DeadLetterError, DeadLetters

    store = _open_store(_load_config(args))
    try:
        letters = DeadLetters(store.conn)
        if args.dlq_command == "list":
            entries = letters.list(include_resolved=args.all)
            if args.json:
                print(json.dumps({"dead_letters": [e.to_json() for e in entries]},
                                 sort_keys=True))
                return 0
            for entry in entries:
                print(f"{entry.id}  subscription #{entry.subscription_id}  {entry.state}  "
                      f"{entry.action} after {entry.attempts} attempt(s): {entry.reason}")
            if not entries:
                print("no dead letters")
            return 0
        try:
            if args.dlq_command == "retry":
                entry = letters.retry(args.id)
                store.update_progress(entry.subscription_id, attempts=0, last_error=None)
                print(f"dead letter {entry.id} closed: subscription #{entry.subscription_id} "
                      "will be retried by the running listener")
            else:
                entry = letters.drop(args.id)
                print(f"dead letter {entry.id} dropped: subscription #{entry.subscription_id} "
                      "is left as it is until new chain facts arrive for it")
        except DeadLetterError as exc:
            raise UserError(str(exc)) from None
        return 0
    finally:
        store.close()


def run_alias(command: Sequence[str], argv: Sequence[str] | None = None) -> int:
    """Run ``blockhost COMMAND ARGS`` for a seed-compatible script name; ``--config`` is a
    global flag, so it is moved in front of the command wherever the user put it."""
    rest = list(sys.argv[1:] if argv is None else argv)
    front: list[str] = []
    for i, item in enumerate(rest):
        if item == "--config" and i + 1 < len(rest):
            front, rest = ["--config", rest[i + 1]], rest[:i] + rest[i + 2:]
            break
        if item.startswith("--config="):
            front, rest = [item], rest[:i] + rest[i + 1:]
            break
    return main([*front, *command, *rest])


def gc_alias(argv: Sequence[str] | None = None) -> int:
    """``blockhost-vm-gc``: the seed's GC script name for ``blockhost gc``."""
    return run_alias(["gc"], argv)


def cmd_demo(args: argparse.Namespace) -> int:
    from listener.devkit.demo import run_demo

    return run_demo(args.workdir)


HANDLERS = {
    "listen": cmd_listen,
    "status": cmd_status,
    "keys": cmd_keys,
    "contracts": cmd_contracts,
    "user": cmd_user,
    "mint": cmd_mint,
    "replay": cmd_replay,
    "gc": cmd_gc,
    "dlq": cmd_dlq,
    "vm": cmd_vm,
    "template": cmd_template,
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


def mint_nft_main(argv: Sequence[str] | None = None) -> int:
    """``blockhost-mint-nft``: the seed's command name for ``blockhost mint``."""
    return run_alias(["mint"], argv)


if __name__ == "__main__":
    sys.exit(main())
