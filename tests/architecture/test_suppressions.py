"""Every lint or type suppression says why, on the same line.

``# noqa: E501 - reason`` and ``# type: ignore[code]  # reason``: a bare suppression hides a
finding nobody can judge later. One without a code is refused too.
"""

from __future__ import annotations

import re

import pytest

from tests.support.paths import REPO_ROOT

CHECKED = ("listener", "provisioner", "bench", "tests")
NOQA = re.compile(r"#\s*noqa(?P<codes>:\s*[A-Z]+[0-9]+(?:\s*,\s*[A-Z]+[0-9]+)*)?(?P<rest>.*)$")
IGNORE = re.compile(r"#\s*type:\s*ignore(?P<codes>\[[a-z0-9, -]+\])?(?P<rest>.*)$")


def bare_suppressions(text: str) -> list[tuple[int, str]]:
    """(line number, line) of each suppression without a code or without a reason."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        noqa, ignore = NOQA.search(line), IGNORE.search(line)
        bare_noqa = noqa and (not noqa["codes"] or not re.match(r"\s+-\s+\S", noqa["rest"]))
        bare_ignore = ignore and (not ignore["codes"]
                                  or not re.match(r"\s+#\s*\S", ignore["rest"]))
        if bare_noqa or bare_ignore:
            found.append((number, line.strip()))
    return found


def test_every_suppression_in_the_tree_names_its_reason() -> None:
    bare = [f"{path.relative_to(REPO_ROOT)}:{number}: {line}"
            for part in CHECKED for path in sorted((REPO_ROOT / part).rglob("*.py"))
            for number, line in bare_suppressions(path.read_text(encoding="utf-8"))]
    assert bare == []


NOQA_MARK, IGNORE_MARK = "# no" + "qa", "# type: " + "ignore"


@pytest.mark.parametrize(("tail", "bare"), [
    (f"{NOQA_MARK}: E501 - a URL", False),
    (f"{NOQA_MARK}: E501, BLE001 - a URL", False),
    (f"{NOQA_MARK}: E501", True),
    (NOQA_MARK, True),
    (f"{IGNORE_MARK}[arg-type]  # the stub is too narrow", False),
    (f"{IGNORE_MARK}[arg-type]", True),
    (IGNORE_MARK, True),
    (f"{IGNORE_MARK}  # no code", True),
])
def test_a_bare_suppression_is_found(tail: str, bare: bool) -> None:
    assert bool(bare_suppressions(f"x = f()  {tail}")) is bare
