"""The wheel carries everything it needs: built, installed into a fresh venv outside the source
tree (cwd elsewhere, nothing on PYTHONPATH), then deploy, render and key generation from there.

The venv gets its dependencies from the package index (through pip's usual cache) and the
`demo` extra, so the end-to-end demo runs from it too (with anvil from BLOCKHOST_ANVIL).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from web3 import Web3

from listener.devkit.devchain import DEV_PRIVATE_KEYS, Anvil, find_anvil
from tests.support.paths import REPO_ROOT

pytestmark = pytest.mark.slow

#: Not part of the package, or written by builds and installs: left out of the copy built.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "node_modules", "build", "dist", "*.egg-info",
                                    "__pycache__", ".*_cache", "tests", "bench")
RENDER = """import json, sys
from provisioner.cloudinit import find_template, render
print(find_template("nft-auth"))
print(render("nft-auth", json.loads(sys.argv[1])))
"""
VARIABLES: dict[str, str | int] = {
    "VM_NAME": "blockhost-001", "VM_IP": "192.0.2.10", "VM_IPV6": "", "SIGNING_HOST": "192.0.2.10",
    "USERNAME": "admin", "NFT_TOKEN_ID": 0, "WALLET_ADDRESS": "0x" + "ab" * 20, "CHAIN_ID": 31337,
    "NFT_CONTRACT": "0x" + "cd" * 20, "RPC_URL": "http://127.0.0.1:8545", "OTP_LENGTH": 6,
    "OTP_TTL": 300, "SECRET_KEY": "0f" * 32,
}


@dataclass(frozen=True)
class Installed:
    """A venv holding only the wheel and its dependencies, and a directory far from the source."""

    wheel: Path
    venv: Path
    cwd: Path

    def run(self, program: str, *argv: str, timeout: float = 120,
            **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.venv / "bin" / program), *argv], cwd=self.cwd,
                              env={**_clean_env(), **env}, capture_output=True, text=True,
                              timeout=timeout, check=False)


def _clean_env() -> dict[str, str]:
    """This environment without anything that could lead Python back to the source tree."""
    return {k: v for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("BLOCKHOST_")}


def _check(argv: list[str], cwd: Path, timeout: float) -> None:
    result = subprocess.run(argv, cwd=cwd, env=_clean_env(), capture_output=True, text=True,
                            timeout=timeout, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def _build_wheel(root: Path) -> Path:
    """Build from a copy, so the build writes nothing into the shared working tree."""
    source = root / "source"
    shutil.copytree(REPO_ROOT, source, symlinks=True, ignore=NOT_SOURCE)
    _check([sys.executable, "-m", "pip", "wheel", "--no-deps", str(source), "-w",
            str(root / "dist")], root, 600)
    shutil.rmtree(source)
    (wheel,) = (root / "dist").glob("blockhost_provisioner-*.whl")
    return wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    root = tmp_path_factory.mktemp("wheel")
    wheel = _build_wheel(root)
    venv = root / "venv"
    _check([sys.executable, "-m", "venv", str(venv)], root, 300)
    _check([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
            f"{wheel}[demo]"], root, 900)
    (root / "elsewhere").mkdir()
    yield Installed(wheel=wheel, venv=venv, cwd=root / "elsewhere")


def test_the_wheel_holds_its_data_and_only_daemon_dependencies(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
        metadata = next(wheel.read(n) for n in names if n.endswith(".dist-info/METADATA"))
    assert {"blockhost_data/artifacts/BlockhostSubscriptions.json",
            "blockhost_data/templates/nft-auth.yaml", "blockhost_data/web/signup.html",
            "blockhost_data/web/nft-credentials.html"} <= names
    requires = [line for line in metadata.decode().splitlines() if line.startswith("Requires-Dist")]
    assert "Requires-Dist: trustme~=1.2; extra == \"demo\"" in requires  # ranges; the lock pins
    assert not [r for r in requires if r.split()[1].startswith(("trustme", "pytest"))
                and "extra ==" not in r]


def test_code_and_data_come_from_the_venv(installed: Installed) -> None:
    code = ("import listener, provisioner.cloudinit as c, listener.chain.contracts as k; "
            "print(listener.__file__, c.REPO_TEMPLATE_DIR, k.ARTIFACT_DIR)")
    result = installed.run("python", "-c", code)
    assert result.returncode == 0, result.stderr
    for path in map(Path, result.stdout.split()):
        assert path.is_relative_to(installed.venv) and path.exists(), path


def test_contracts_deploy_from_the_venv(installed: Installed, anvil: Anvil) -> None:
    key = installed.cwd / "deployer.key"
    key.write_text(DEV_PRIVATE_KEYS[0])
    key.chmod(0o600)
    result = installed.run("blockhost", "contracts", "deploy", "--rpc-url", anvil.url,
                           "--private-key-file", str(key), "--json")
    assert result.returncode == 0, result.stderr
    deployment = json.loads(result.stdout.splitlines()[-1])
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    for name in ("stablecoin", "subscriptions", "nft"):
        assert len(w3.eth.get_code(deployment[name])) > 0, name


def test_cloud_init_render_from_the_venv(installed: Installed) -> None:
    result = installed.run("python", "-c", RENDER, json.dumps(VARIABLES))
    assert result.returncode == 0, result.stderr
    found, rendered = result.stdout.split("\n", 1)
    assert Path(found).is_relative_to(installed.venv)
    assert rendered.startswith("#cloud-config\n") and "hostname: blockhost-001" in rendered


def test_keys_generate_from_the_venv(installed: Installed) -> None:
    out = installed.cwd / "server.key"
    result = installed.run("blockhost", "keys", "generate", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("0x04") and out.stat().st_mode & 0o777 == 0o600


def test_demo_from_the_venv(installed: Installed) -> None:
    """The demo is development tooling: it needs the `demo` extra and an anvil binary."""
    result = installed.run("blockhost", "demo", "--workdir", str(installed.cwd / "demo"),
                           timeout=300, BLOCKHOST_ANVIL=find_anvil())
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "demo finished" in result.stdout
