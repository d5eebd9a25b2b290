"""The committed artifacts are exactly what the pinned compiler produces from the sources."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from listener.chain.contracts import ARTIFACT_DIR, load_artifact
from tests.support.paths import REPO_ROOT

BUILD = REPO_ROOT / "contracts" / "build.mjs"
EXPECTED = ("AccessCredentialNFT", "BlockhostSubscriptions", "MockStablecoin")


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH (needed to run contracts/build.mjs)")
    if not (REPO_ROOT / "node_modules" / "solc").is_dir():
        pytest.skip("node_modules/solc is missing: run `make setup` (npm ci)")
    return node


def test_rebuild_reproduces_committed_artifacts(tmp_path: Path) -> None:
    out = tmp_path / "artifacts"
    result = subprocess.run(
        [_node(), str(BUILD), "--out", str(out)],
        cwd=tmp_path,  # the build must not depend on the working directory
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rebuilt = sorted(p.name for p in out.glob("*.json"))
    committed = sorted(p.name for p in ARTIFACT_DIR.glob("*.json"))
    assert rebuilt == committed == sorted(f"{name}.json" for name in EXPECTED)
    for name in rebuilt:
        assert (out / name).read_bytes() == (ARTIFACT_DIR / name).read_bytes(), (
            f"{name} differs from a fresh build: run `make contracts` and commit the result"
        )


def test_artifacts_are_well_formed_and_portable() -> None:
    for name in EXPECTED:
        text = (ARTIFACT_DIR / f"{name}.json").read_text()
        assert text.endswith("}\n")
        assert str(REPO_ROOT) not in text and "/home/" not in text  # no absolute paths leak in
        artifact = load_artifact(name)
        assert artifact["contractName"] == name
        assert artifact["bytecode"].startswith("0x") and len(artifact["bytecode"]) > 2
        assert artifact["deployedBytecode"].startswith("0x")
        # EIP-170: deployable on mainnet-like chains.
        assert (len(artifact["deployedBytecode"]) - 2) // 2 <= 24_576
        assert artifact["compiler"]["version"].startswith("0.8.37+")
        assert artifact["compiler"]["settings"] == {
            "evmVersion": "cancun",
            "metadata": {"bytecodeHash": "none"},
            "optimizer": {"enabled": True, "runs": 200},
        }


def test_build_fails_with_one_clear_line_on_bad_arguments(tmp_path: Path) -> None:
    result = subprocess.run(
        [_node(), str(BUILD), "--bogus"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "unknown argument" in result.stderr
