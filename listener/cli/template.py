"""``blockhost template build``: prints one JSON line {vmid, node, action}."""

from __future__ import annotations

import argparse

from listener.cli.output import print_json
from listener.cli.parser import config_from


def run(args: argparse.Namespace) -> int:
    from listener.ops.template import build_template_vm

    result = build_template_vm(config_from(args), image=args.image, node=args.node,
                               name=args.name)
    print_json({"vmid": result.vmid, "node": result.node, "action": result.action},
               sort_keys=False)
    return 0
