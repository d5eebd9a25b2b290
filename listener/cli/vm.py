"""``blockhost vm list|destroy|export-tf|create``: the operator's hands on the inventory."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from listener.cli.output import PROG, print_json
from listener.cli.parser import config_from
from listener.errors import UserError

if TYPE_CHECKING:
    from listener.ops.vm_admin import VmRow


def run(args: argparse.Namespace) -> int:
    handlers = {"export-tf": cmd_vm_export_tf, "list": cmd_vm_list,
                "destroy": cmd_vm_destroy, "create": cmd_vm_create}
    return handlers[args.vm_command](args)


def cmd_vm_export_tf(args: argparse.Namespace) -> int:
    """Prints the directory written."""
    from listener.ops.export_tf import export_terraform_dir

    print(export_terraform_dir(config_from(args), args.name, out_dir=args.out))
    return 0


def cmd_vm_list(args: argparse.Namespace) -> int:
    from listener.ops.vm_admin import inventory_rows

    rows = inventory_rows(config_from(args))
    if args.json:
        print_json({"vms": [r.to_json() for r in rows]})
    else:
        print(render_rows(rows))
    return 0


def render_rows(rows: list[VmRow]) -> str:
    if not rows:
        return "no VMs in the inventory"
    lines = [f"{'NAME':<20} {'VMID':>7} {'NODE':<10} {'IPV4':<16} {'STATE':<9} {'POWER':<9} SUB"]
    for r in rows:
        lines.append(f"{r.name:<20} {r.vmid:>7} {r.node:<10} {r.ipv4 or '-':<16} {r.state:<9} "
                     f"{r.power:<9} {'#' + str(r.subscription_id) if r.subscription_id else '-'}")
    return "\n".join(lines)


def cmd_vm_destroy(args: argparse.Namespace) -> int:
    """A dry run unless --execute."""
    from listener.ops.vm_admin import destroy_by_hand

    record = destroy_by_hand(config_from(args), args.name, execute=args.execute)
    if args.execute:
        print(f"destroyed {record.name} (vmid {record.vmid}); its VMID and addresses are "
              "released")
    else:
        print(f"would destroy {record.name} (vmid {record.vmid} on {record.node}, ip "
              f"{record.ipv4}) after checking its ownership markers; add --execute")
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
        return str(args.user_signature_file.read_text(encoding="utf-8")).strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read --user-signature-file {args.user_signature_file}: "
                        f"{exc.__class__.__name__}") from None


def cmd_vm_create(args: argparse.Namespace) -> int:
    from listener.ops.vm_create import CreateRequest, Placement, create_vm, plan_vm, validate

    if args.mock and args.apply:
        print(f"{PROG}: error: --mock uses a throw-away database, so an applied VM would be "
              "tracked nowhere; drop --mock to create it, or --apply for a dry run",
              file=sys.stderr)
        return 2
    config = config_from(args)
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
    if not args.apply:
        print(plan_vm(config, request, placement, mock=args.mock).to_json_line())
        return 0
    signature = bytes.fromhex(signature_hex[2:]) if signature_hex else None
    result = create_vm(config, request, placement, signature=signature)
    for note in result.notes:
        print(f"{PROG}: note: {note}", file=sys.stderr)
    print(result.to_json_line())
    return 0
