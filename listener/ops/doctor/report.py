"""The doctor's answer: an aligned table (✓ / ✗ / – for skipped, each ✗ with its fix on the
next line) or, with ``--json``, a list of objects."""

from __future__ import annotations

import json
from collections.abc import Sequence

from listener.ops.doctor.check import Check

PASS, FAIL, SKIP = "✓", "✗", "–"


def mark(check: Check) -> str:
    if check.skipped:
        return SKIP
    return PASS if check.ok else FAIL


def failures(checks: Sequence[Check]) -> list[Check]:
    return [c for c in checks if not c.ok]


def render_table(checks: Sequence[Check]) -> str:
    width = max((len(c.name) for c in checks), default=0)
    lines = []
    for check in checks:
        lines.append(f"{mark(check)} {check.name.ljust(width)}  {check.detail}")
        if not check.ok and check.fix:
            lines.append(f"  {' ' * width}  fix: {check.fix}")
    lines.append(summary(checks))
    return "\n".join(lines)


def summary(checks: Sequence[Check]) -> str:
    bad = len(failures(checks))
    skips = sum(1 for c in checks if c.skipped)
    passed = len(checks) - bad - skips
    tail = f", {skips} not applicable here" if skips else ""
    return f"{passed} passed, {bad} failed{tail}"


def render_json(checks: Sequence[Check]) -> str:
    return json.dumps([c.as_dict() for c in checks])


def failure_lines(checks: Sequence[Check]) -> list[str]:
    """One line per failed check: ✗ name: detail; fix."""
    return [f"{FAIL} {c.name}: {c.detail}; {c.fix}" for c in failures(checks)]
