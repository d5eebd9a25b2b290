"""The hashed application lock pins what CI and the Debian package install; pyproject keeps ranges.

Drift fails here: a dependency added to pyproject but not locked, a locked version outside its
range, or a lock line without a hash (pip's --require-hashes would refuse the whole file).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.paths import REPO_ROOT

LOCKS = REPO_ROOT / "requirements"
_PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s\\;]+)")


def _pins(lock: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in lock.read_text().splitlines():
        if m := _PIN.match(line):
            pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


def _requirements(*extras: str) -> list[Requirement]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    texts = list(project["dependencies"])
    for extra in extras:
        texts += project["optional-dependencies"][extra]
    return [Requirement(text) for text in texts]


@pytest.mark.parametrize(("lock", "extras"), [("runtime.lock", ()), ("dev.lock", ("test", "demo"))])
def test_every_declared_dependency_is_locked_inside_its_range(
        lock: str, extras: tuple[str, ...]) -> None:
    pins = _pins(LOCKS / lock)
    for req in _requirements(*extras):
        version = pins.get(canonicalize_name(req.name))
        assert version is not None, f"{req.name} is in pyproject.toml but not in {lock}: make lock"
        assert req.specifier.contains(version, prereleases=True), (
            f"{lock} pins {req.name}=={version}, outside pyproject's {req.specifier}: make lock")


@pytest.mark.parametrize("lock", ["runtime.lock", "dev.lock"])
def test_every_pin_carries_a_hash_and_no_machine_specific_source(lock: str) -> None:
    text = (LOCKS / lock).read_text()
    first = re.search(r"^[A-Za-z0-9_.\-]+==", text, re.M)
    assert first is not None, f"{lock} pins nothing"
    entries = re.split(r"\n(?=[A-Za-z0-9_.\-]+==)", text[first.start():])
    for entry in entries:
        assert _PIN.match(entry) and "--hash=sha256:" in entry, entry.splitlines()[0]
    assert "--find-links" not in text and "--index-url" not in text


def test_the_runtime_lock_agrees_with_the_dev_lock() -> None:
    runtime, dev = _pins(LOCKS / "runtime.lock"), _pins(LOCKS / "dev.lock")
    assert {name: dev.get(name) for name in runtime} == runtime
    assert "pytest" not in runtime and "trustme" not in runtime
