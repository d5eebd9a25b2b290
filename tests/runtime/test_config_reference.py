"""The reference system's blockhost.yaml keys: mapped with a warning, refused when unsafe."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from structlog.testing import capture_logs

from listener.config import load_config
from listener.config_reference import DERIVED, RENAMED
from listener.errors import ConfigError
from tests.support.paths import REPO_ROOT

SUBS, NFT = "0x" + "ab" * 20, "0x" + "cd" * 20
PUBKEY = "0x04" + "11" * 64


def load(tmp_path: Path, data: dict[str, object], environ: dict[str, str] | None = None):
    path = tmp_path / "blockhost.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_config(path, environ=environ or {}, broker_allocation=None)


@pytest.mark.parametrize(("old", "value", "read"), [
    ("contract_address", SUBS, lambda c: c.chain.subscription_contract),
    ("nft_contract", NFT, lambda c: c.chain.nft_contract),
    ("public_secret", "my-secret-phrase", lambda c: c.public_secret_default),
])
def test_each_reference_key_is_read_as_ours_with_a_deprecation_line(
        tmp_path: Path, old: str, value: str, read) -> None:
    with capture_logs() as logs:
        config = load(tmp_path, {old: value})
    assert read(config) == value
    assert [(e["log_level"], e["event"], e["reference_key"], e["use_instead"]) for e in logs] == [
        ("warning", "config.reference_key", old, RENAMED[old])]


def test_a_reference_key_lands_beside_the_section_it_joins(tmp_path: Path) -> None:
    config = load(tmp_path, {"contract_address": SUBS, "chain": {"chain_id": 5, "nft_contract": NFT}})
    assert (config.chain.subscription_contract, config.chain.nft_contract,
            config.chain.chain_id) == (SUBS, NFT, 5)


@pytest.mark.parametrize(("old", "ours"), [
    ("contract_address", {"chain": {"subscription_contract": SUBS}}),
    ("nft_contract", {"chain": {"nft_contract": NFT}}),
    ("public_secret", {"public_secret_default": "x"}),
])
def test_a_key_in_both_forms_is_an_error(tmp_path: Path, old: str, ours: dict) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, {old: SUBS, **ours})
    message = str(info.value)
    assert f"{old} and {RENAMED[old]} are both set" in message and "keep only" in message
    assert "\n" not in message


@pytest.mark.parametrize("old", sorted(DERIVED))
def test_derived_reference_keys_are_accepted_with_a_warning(tmp_path: Path, old: str) -> None:
    with capture_logs() as logs:
        config = load(tmp_path, {old: PUBKEY, "contract_address": SUBS})
    assert config.chain.subscription_contract == SUBS
    ignored = [e for e in logs if e["event"] == "config.reference_key_ignored"]
    assert [e["reference_key"] for e in ignored] == [old]
    assert "is not read" in ignored[0]["reason"]


def test_the_reference_admin_section_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"admin: .*not supported here; remove the section"):
        load(tmp_path, {"admin": {"enabled": True}})


@pytest.mark.parametrize("data", [{"contract_adress": SUBS}, {"server_private_key": "x"},
                                  {"chain": {"contract_address": SUBS}}])
def test_unknown_keys_stay_errors(tmp_path: Path, data: dict) -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        load(tmp_path, data)


def test_a_bad_reference_value_names_our_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"chain\.subscription_contract: must be a 0x"):
        load(tmp_path, {"contract_address": "0x12"})


def test_the_environment_still_wins(tmp_path: Path) -> None:
    config = load(tmp_path, {"contract_address": SUBS},
                  environ={"BLOCKHOST_CHAIN__SUBSCRIPTION_CONTRACT": NFT})
    assert config.chain.subscription_contract == NFT


def test_a_whole_reference_etc_directory_loads(tmp_path: Path) -> None:
    """init-server.sh's blockhost.yaml with the db.yaml and web3-defaults.yaml beside it."""
    (tmp_path / "db.yaml").write_text(yaml.safe_dump({
        "db_file": "/var/lib/blockhost/vms.json", "bridge": "vmbr1", "gc_grace_days": 3,
        "ip_pool": {"network": "10.4.0.0/24", "start": 10, "end": 50, "gateway": "10.4.0.1"}}))
    (tmp_path / "web3-defaults.yaml").write_text(yaml.safe_dump({
        "blockchain": {"chain_id": 11155111, "nft_contract": NFT,
                       "rpc_url": "https://rpc.example"},
        "deployer": {"private_key_file": "/etc/blockhost/deployer.key"}}))
    config = load(tmp_path, {"public_secret": "blockhost-access", "server_public_key": PUBKEY,
                             "deployer_address": "0x" + "ee" * 20, "contract_address": SUBS})
    assert (config.chain.chain_id, config.chain.subscription_contract,
            config.chain.nft_contract) == (11155111, SUBS, NFT)
    assert (config.network.bridge, config.gc.grace_days) == ("vmbr1", 3)
    assert config.public_secret_default == "blockhost-access"


def test_the_cli_prints_the_deprecation_line(tmp_path: Path) -> None:
    from listener.crypto.key_files import generate_key_file

    generate_key_file(tmp_path / "server.key")
    config = tmp_path / "blockhost.yaml"
    config.write_text(yaml.safe_dump({"contract_address": SUBS,
                                      "server_key_file": str(tmp_path / "server.key")}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLOCKHOST_")}
    proc = subprocess.run([str(Path(sys.executable).parent / "blockhost"), "--config",
                           str(config), "keys", "show"], capture_output=True, text=True,
                          timeout=60, cwd=REPO_ROOT, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("0x04")
    assert "config.reference_key" in proc.stderr and "chain.subscription_contract" in proc.stderr
