"""One dev environment (anvil, contracts, the PVE simulator, a good config) for the doctor
tests of a module; each bad case writes its own config beside it, changed in one place."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from listener.cli.main import main
from listener.devkit.devenv import DevEnv, start_dev_env


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevEnv]:
    environment = start_dev_env(tmp_path_factory.mktemp("doctor") / "env", clone_seconds=0.2)
    try:
        yield environment
    finally:
        environment.close()


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and key in out else value
    return out


def config_with(env: DevEnv, where: Path, changes: dict[str, Any]) -> Path:
    """The dev config with ``changes`` merged in, written to ``where/blockhost.yaml``."""
    document = _merge(yaml.safe_load(env.config_path.read_text()), changes)
    path = where / "blockhost.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def doctor_json(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    """Run `blockhost doctor --json` in this process: exit code and the checks by name."""
    code = main(["--config", str(config), "doctor", "--json"])
    out = capsys.readouterr().out
    return code, {check["name"]: check for check in json.loads(out)}


def failing(checks: dict[str, Any]) -> list[str]:
    return sorted(name for name, check in checks.items() if not check["ok"])
