"""The Debian packaging sources agree with the project (fast: nothing is built here).

The example configuration the package installs is one the config model accepts; /usr/bin gets
exactly the seed's names plus `blockhost`, each a console script of pyproject.toml; the
maintainer and build scripts parse; the package never enables or starts a unit by itself.
"""

from __future__ import annotations

import subprocess
import tomllib

import pytest
import yaml

from listener.config import build_config
from tests.support.paths import REPO_ROOT

DEBIAN = REPO_ROOT / "debian"
VENV_BIN = "opt/venvs/blockhost-provisioner/bin"
SEED_COMMANDS = {"blockhost", "blockhost-vm-create", "blockhost-vm-gc", "blockhost-mint-nft"}


def test_the_example_config_is_valid_and_names_the_package_paths() -> None:
    text = (REPO_ROOT / "packaging/blockhost.yaml.example").read_text()
    config = build_config(yaml.safe_load(text), origin="blockhost.yaml.example")
    assert str(config.db.path).startswith("/var/lib/blockhost/")
    assert str(config.server_key_file).startswith("/etc/blockhost/")
    assert str(config.proxmox.token_secret_file).startswith("/etc/blockhost/")
    assert config.vm.rpc_url == ""  # tenants get no RPC until the operator names a public one
    install = (DEBIAN / "install").read_text()
    assert "packaging/blockhost.yaml.example etc/blockhost" in install


def test_usr_bin_links_are_the_seed_names_and_console_scripts() -> None:
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    links = dict(line.split()[::-1] for line in (DEBIAN / "links").read_text().splitlines()
                 if line.strip())
    assert {link.removeprefix("usr/bin/") for link in links} == SEED_COMMANDS
    for link, target in links.items():
        name = link.removeprefix("usr/bin/")
        assert target == f"{VENV_BIN}/{name}" and name in scripts, link


@pytest.mark.parametrize("script", ["debian/blockhost-provisioner.postinst",
                                    "debian/blockhost-provisioner.postrm",
                                    "debian/blockhost-provisioner.prerm",
                                    "packaging/build-deb.sh", "packaging/check-install.sh",
                                    "packaging/in-throwaway-root.sh"])
def test_shell_scripts_parse(script: str) -> None:
    result = subprocess.run(["sh", "-n", str(REPO_ROOT / script)], capture_output=True,
                            text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert "#DEBHELPER#" in (REPO_ROOT / script).read_text() or not script.startswith("debian/")


def test_units_are_installed_but_never_enabled_by_the_package() -> None:
    rules = (DEBIAN / "rules").read_text()
    assert "dh_installsystemd --no-enable" in rules
    assert "systemctl" not in (DEBIAN / "blockhost-provisioner.postinst").read_text()
