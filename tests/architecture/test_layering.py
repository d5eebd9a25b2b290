"""The package layering, checked over every module's imports (AST, function-level included).

The rules say which part of the house may lean on which (README "Where each part lives"):

- ``provisioner`` (host side) never imports ``listener`` (chain side);
- the simulator (``provisioner.pvesim``) is development tooling: only it and ``listener.devkit``
  import it, and it shares no code with the client it imitates (only generic helpers);
- inside ``listener`` the sub-packages form layers; each may import only the layers below it;
- nothing outside ``listener.devkit`` imports it, except the CLI, and only inside a function
  (so ``blockhost listen`` never loads demo code);
- nothing outside ``listener.cli`` imports the CLI.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.paths import REPO_ROOT

#: The simulator imitates PVE from its documentation, not from our client: it may use only
#: these generic helpers of ours.
SIMULATOR_MAY_IMPORT = ("provisioner.pvesim", "provisioner.storage", "provisioner.processes")

#: Each listener part and the listener parts it may import (``provisioner`` is always allowed,
#: except the simulator). Lower layers first.
LISTENER_LAYERS: dict[str, frozenset[str]] = {}
#: Root modules every part may use (redaction runs wherever text leaves the process).
_EVERYWHERE = ["redact"]
_ORDER = [
    ("redact", []),
    ("errors", []),
    ("config_reference", ["errors"]),  # the reference system's keys, read by config
    ("config", ["errors", "config_reference"]),
    ("crypto", ["errors"]),
    ("chain", ["errors", "config"]),
    ("writeback", ["errors", "config", "chain", "crypto"]),
    ("reconcile", ["errors", "config", "chain", "crypto", "writeback"]),
    ("runtime", ["errors", "config", "chain", "crypto", "writeback", "reconcile"]),
    ("ops", ["errors", "config", "chain", "crypto", "writeback", "reconcile", "runtime"]),
    ("userkit", ["errors", "config", "chain", "crypto"]),
    ("devkit", ["errors", "config", "chain", "crypto", "writeback", "reconcile", "runtime",
                "ops", "userkit"]),
    ("cli", ["errors", "config", "chain", "crypto", "writeback", "reconcile", "runtime", "ops",
             "userkit", "devkit"]),
]
for _part, _allowed in _ORDER:
    LISTENER_LAYERS[_part] = frozenset([_part, *_EVERYWHERE, *_allowed])


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    imported: str  # dotted module name (best effort for "from x import y": x.y when x.y exists)
    line: int
    in_function: bool


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(importer: str, is_package: bool, level: int, module: str | None) -> str:
    if level == 0:
        return module or ""
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def imports_of(root: Path, path: Path) -> Iterator[Import]:
    """Every import in ``path``, with whether it sits inside a function body."""
    name = module_name(root, path)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))

    def walk(node: ast.AST, in_function: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef |
                                               ast.Lambda)
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield Import(name, alias.name, child.lineno, in_function)
            elif isinstance(child, ast.ImportFrom):
                target = _resolve(name, path.name == "__init__.py", child.level, child.module)
                for alias in child.names:
                    sub = f"{target}.{alias.name}"
                    exists = (root / sub.replace(".", "/")).with_suffix(".py").exists() or \
                        (root / sub.replace(".", "/") / "__init__.py").exists()
                    yield Import(name, sub if exists else target, child.lineno, in_function)
            yield from walk(child, nested)

    yield from walk(tree, False)


def _part(module: str) -> str | None:
    """The listener part a module belongs to (``listener.chain.rpc`` -> ``chain``)."""
    pieces = module.split(".")
    if pieces[0] != "listener" or len(pieces) < 2:
        return None
    return pieces[1]


def violations(root: Path) -> list[str]:
    found: list[str] = []
    for path in sorted([*root.glob("listener/**/*.py"), *root.glob("provisioner/**/*.py")]):
        for imp in imports_of(root, path):
            where = f"{path.relative_to(root)}:{imp.line}"
            src, dst = imp.importer, imp.imported
            if src.startswith("provisioner") and dst.split(".")[0] == "listener":
                found.append(f"{where}: provisioner imports {dst}")
            if dst.startswith("provisioner.pvesim") and \
                    not src.startswith(("provisioner.pvesim", "listener.devkit")):
                found.append(f"{where}: only the simulator and devkit may import {dst}")
            if src.startswith("provisioner.pvesim") and dst.startswith("provisioner") and \
                    not dst.startswith(SIMULATOR_MAY_IMPORT):
                found.append(f"{where}: the simulator must not share code with the client "
                             f"({dst})")
            src_part, dst_part = _part(src), _part(dst)
            if src_part is None or dst_part is None:
                continue
            allowed = LISTENER_LAYERS.get(src_part)
            if allowed is None or dst_part not in LISTENER_LAYERS:
                found.append(f"{where}: listener.{src_part or dst_part} is not a known layer; "
                             "add it to LISTENER_LAYERS")
                continue
            if dst_part not in allowed:
                found.append(f"{where}: listener.{src_part} must not import {dst}")
            elif dst_part == "devkit" and src_part == "cli" and not imp.in_function:
                found.append(f"{where}: the CLI imports {dst} at module level; import it "
                             "inside the command's handler")
    return found


def test_the_layering_holds_on_this_tree() -> None:
    assert violations(REPO_ROOT) == []


def _plant(tmp_path: Path, relative: str, source: str) -> None:
    for package in [tmp_path / "listener", tmp_path / "provisioner"]:
        package.mkdir(exist_ok=True)
        (package / "__init__.py").touch()
    target = tmp_path / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    for parent in target.relative_to(tmp_path).parents:
        if str(parent) != ".":
            (tmp_path / parent / "__init__.py").touch()
    target.write_text(source)


@pytest.mark.parametrize(("relative", "source", "expected"), [
    ("provisioner/inventory.py", "from listener.config import Config\n",
     "provisioner imports listener.config"),
    ("listener/chain/scanner.py", "def f():\n    from listener.reconcile import decide\n",
     "listener.chain must not import listener.reconcile.decide"),
    ("listener/chain/journal.py", "from ..writeback.nft import mint_key\n",
     "listener.chain must not import listener.writeback.nft"),
    ("listener/ops/gc.py", "import listener.devkit.demo\n",
     "listener.ops must not import listener.devkit.demo"),
    ("listener/runtime/daemon.py", "from listener.cli import main\n",
     "listener.runtime must not import listener.cli"),
    ("listener/cli/main.py", "from listener.devkit.demo import run_demo\n",
     "the CLI imports listener.devkit.demo at module level"),
    ("listener/runtime/daemon.py", "from provisioner.pvesim import state\n",
     "only the simulator and devkit may import provisioner.pvesim"),
    ("provisioner/pvesim/simulator.py", "from provisioner.backend import VMRef\n",
     "the simulator must not share code with the client"),
    ("listener/crypto/ecies.py", "from listener.chain import events\n",
     "listener.crypto must not import listener.chain.events"),
])
def test_a_planted_violation_is_reported(tmp_path: Path, relative: str, source: str,
                                         expected: str) -> None:
    (tmp_path / "listener" / "reconcile").mkdir(parents=True)
    (tmp_path / "listener" / "reconcile" / "decide.py").touch()
    (tmp_path / "listener" / "writeback").mkdir()
    (tmp_path / "listener" / "writeback" / "nft.py").touch()
    (tmp_path / "listener" / "devkit").mkdir()
    (tmp_path / "listener" / "devkit" / "demo.py").touch()
    (tmp_path / "listener" / "chain").mkdir()
    (tmp_path / "listener" / "chain" / "events.py").touch()
    _plant(tmp_path, relative, source)
    found = violations(tmp_path)
    assert any(expected in line for line in found), found


def test_an_import_inside_a_cli_handler_is_allowed(tmp_path: Path) -> None:
    _plant(tmp_path, "listener/devkit/demo.py", "")
    _plant(tmp_path, "listener/cli/main.py",
           "def cmd_demo():\n    from listener.devkit.demo import run_demo\n")
    assert violations(tmp_path) == []
