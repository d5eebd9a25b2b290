"""``blockhost``: dispatch a command and turn every failure into one line. Exit codes: 0 ok,
1 failure, 2 usage.

Every error a user can cause prints one line (what, why, what to do) on stderr, never a
traceback. Machine-readable output goes to stdout; logs go to stderr (stdout for `listen`,
where journald collects it). The seed's script names run the same commands.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from listener.cli import (
    backup,
    contracts,
    demo,
    dlq,
    doctor,
    gc,
    import_reference,
    init,
    keys,
    listen,
    markers,
    mint,
    recover,
    reorg,
    replay,
    status,
    template,
    user,
    vm,
    web,
)
from listener.cli.output import PROG, failure_line, print_error
from listener.cli.parser import build_parser
from listener.errors import BlockhostError
from listener.redact import redact
from provisioner.errors import ProvisionerError

HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "init": init.run,
    "listen": listen.run,
    "status": status.run,
    "keys": keys.run,
    "contracts": contracts.run,
    "user": user.run,
    "mint": mint.run,
    "replay": replay.run,
    "reorg": reorg.run,
    "gc": gc.run,
    "dlq": dlq.run,
    "backup": backup.run,
    "doctor": doctor.run,
    "recover": recover.run,
    "import-reference": import_reference.run,
    "markers": markers.run,
    "vm": vm.run,
    "template": template.run,
    "web": web.run,
    "demo": demo.run,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # exits 2 on usage errors
    _configure_logs(args.command)
    return _run(args)


def _configure_logs(command: str) -> None:
    from listener.runtime.logging_setup import configure

    configure(sys.stdout if command == "listen" else sys.stderr)


def _run(args: argparse.Namespace) -> int:
    """The command's exit code; any failure is one line on stderr and exit code 1."""
    try:
        return HANDLERS[args.command](args)
    except BrokenPipeError:  # the reader left (`| head`): say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (BlockhostError, ProvisionerError, OSError) as exc:
        print_error(redact(failure_line(exc)))
    except Exception as exc:  # last resort: one line, a traceback on request
        if os.environ.get("BLOCKHOST_DEBUG"):
            raise
        print_error(redact(f"unexpected {type(exc).__name__}: {str(exc)[:300]}; rerun with "
                           "BLOCKHOST_DEBUG=1 for a traceback and report it"))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
    return 1


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


def mint_nft_main(argv: Sequence[str] | None = None) -> int:
    """``blockhost-mint-nft``: the seed's command name for ``blockhost mint``."""
    return run_alias(["mint"], argv)


def gc_alias(argv: Sequence[str] | None = None) -> int:
    """``blockhost-vm-gc``: the seed's GC script name for ``blockhost gc``."""
    return run_alias(["gc"], argv)


def vm_create_alias(argv: Sequence[str] | None = None) -> int:
    """``blockhost-vm-create``: the seed's vm-generator name for ``blockhost vm create``."""
    return run_alias(["vm", "create"], argv)


if __name__ == "__main__":
    sys.exit(main())
