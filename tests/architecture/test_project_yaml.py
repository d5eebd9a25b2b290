"""PROJECT.yaml is the machine-readable API spec: it must match the CLI parsers and config model."""

from __future__ import annotations

import argparse

import yaml

from listener.cli.parser import build_parser
from listener.config import config_key_paths
from provisioner.cloudinit import list_variables
from provisioner.pvesim.__main__ import build_parser as build_pvesim_parser
from tests.support.paths import REPO_ROOT

SPEC = yaml.safe_load((REPO_ROOT / "PROJECT.yaml").read_text())


def flags_of(parser: argparse.ArgumentParser) -> list[str]:
    found = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        found.append(action.option_strings[-1] if action.option_strings else action.dest.upper())
    return sorted(found)


def walk(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, list[str]]:
    """{"keys generate": ["--out"], ...} for every leaf command."""
    commands: dict[str, list[str]] = {}
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return {prefix.strip(): flags_of(parser)}
    for name, child in subs[0].choices.items():
        commands.update(walk(child, f"{prefix}{name} "))
    return commands


def test_blockhost_commands_and_flags_match() -> None:
    spec = SPEC["entry_points"]["blockhost"]
    parser = build_parser()
    assert sorted(spec["global_flags"]) == flags_of(parser)
    declared = {name: sorted(body.get("flags") or []) for name, body in spec["commands"].items()}
    assert declared == walk(parser)


def test_pvesim_flags_match() -> None:
    spec = SPEC["entry_points"]["blockhost-pvesim"]
    assert sorted(spec["flags"]) == flags_of(build_pvesim_parser())


def test_console_scripts_match_pyproject() -> None:
    import tomllib

    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(SPEC["entry_points"]) == set(scripts)
    for name, target in scripts.items():
        assert SPEC["entry_points"][name]["module"] == target


def test_config_keys_match_model() -> None:
    assert sorted(SPEC["config_keys"]) == sorted(config_key_paths())


def test_cloud_init_templates_and_variables() -> None:
    for name, body in SPEC["cloud_init_templates"].items():
        path = REPO_ROOT / body["path"]
        assert path.exists(), name
        assert sorted(body["variables"]) == sorted(list_variables(path.read_text()))


def test_python_api_names_exist() -> None:
    """Every ``python_api`` entry names something importable (``module: {Name[.attr]: …}``)."""
    import importlib

    missing = []
    for module_name, names in SPEC["python_api"].items():
        module = importlib.import_module(module_name)
        for dotted in names:
            target: object = module
            for part in dotted.split("."):
                if not hasattr(target, part):
                    missing.append(f"{module_name}.{dotted}")
                    break
                target = getattr(target, part)
    assert missing == []
