"""``blockhost backup``: one verified copy of the database (``--out``), or a dated one in a
directory keeping the newest N (``--dir``, what the nightly timer runs)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from listener.cli.output import print_error, print_json
from listener.cli.parser import config_from

if TYPE_CHECKING:
    from listener.ops.backup import BackupReport


def run(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from listener.ops.backup import backup_into, take_backup

    if args.keep is not None and (args.dir is None or args.keep < 1):
        print_error("--keep N needs --dir and N >= 1")
        return 2
    db_path = config_from(args).db.path
    if args.dir is not None:
        report = backup_into(db_path, args.dir, keep=args.keep or 14, now=datetime.now(UTC))
    else:
        report = take_backup(db_path, args.out, force=args.force)
    if args.json:
        print_json(report.as_dict())
    else:
        print(render_text(report))
    return 0


def render_text(report: BackupReport) -> str:
    """One line: where, how big, which cursor, how many rows; then what was pruned."""
    counts = ", ".join(f"{table} {count}" for table, count in report.counts.items())
    lines = [f"backup {report.path}: {report.size} bytes, verified (integrity ok, schema "
             f"{report.schema_version}); chain {report.chain_id} cursor {report.cursor}; {counts}"]
    lines += [f"removed old backup {path}" for path in report.pruned]
    return "\n".join(lines)
