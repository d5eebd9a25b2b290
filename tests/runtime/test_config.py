"""Config loading: our file, the reference's legacy files, env overrides, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from listener.config import build_config, env_overlay, load_config
from listener.errors import ConfigError

ADDR = "0x" + "ab" * 20


def write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def load(tmp_path: Path, data: object, environ: dict[str, str] | None = None, **kw: object):
    return load_config(write(tmp_path / "blockhost.yaml", data), environ=environ or {},
                       broker_allocation=kw.get("broker"))


class TestLoading:
    def test_defaults_are_valid(self, tmp_path: Path) -> None:
        config = load(tmp_path, {})
        assert config.chain.confirmations == 12
        assert config.plan_size(99) == config.plans["default"]
        assert config.grace_seconds == 7 * 86400

    def test_plans_map_ids_to_sizes(self, tmp_path: Path) -> None:
        config = load(tmp_path, {"plans": {1: {"cores": 2, "memory": 4096, "disk": 40}}})
        assert config.plan_size(1).cores == 2
        assert config.plan_size(2).cores == 1

    def test_missing_file_is_one_clear_line(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="not found; pass --config"):
            load_config(tmp_path / "nope.yaml", environ={}, broker_allocation=None)

    def test_bad_yaml(self, tmp_path: Path) -> None:
        path = tmp_path / "blockhost.yaml"
        path.write_text("chain: [\n")
        with pytest.raises(ConfigError, match="not valid YAML"):
            load_config(path, environ={}, broker_allocation=None)

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            ({"chain": {"rpc_url": "x"}}, r"chain\.rpc_url: unknown key"),
            ({"chain": {"confirmations": -1}}, r"chain\.confirmations"),
            ({"chain": {"rpc_urls": ["ftp://x"]}}, r"chain\.rpc_urls: .*http\(s\):// URL"),
            ({"chain": {"ws_url": "https://key@x/abc"}}, r"chain\.ws_url: .*ws:// or wss://"),
            ({"chain": {"nft_contract": "0x12"}}, r"chain\.nft_contract: must be a 0x"),
            ({"proxmox": {"api_url": "http://pve:8006"}}, r"proxmox\.api_url: must be an https"),
            ({"network": {"ip_pool": {"network": "10.0.0.0/24", "start": 5, "end": 300}}},
             r"network\.ip_pool: start and end must lie inside network"),
            ({"vm": {"username": "Root;rm"}}, r"vm\.username"),
            ({"plans": {"gold": {"cores": 1}}}, r"plans: .*plan key 'gold'"),
            ({"bogus": 1}, r"bogus: unknown key"),
        ],
    )
    def test_errors_name_the_key_path(self, tmp_path: Path, data: dict, message: str) -> None:
        with pytest.raises(ConfigError, match=message) as info:
            load(tmp_path, data)
        assert "\n" not in str(info.value)


class TestLegacyFiles:
    def test_db_yaml_and_web3_defaults_are_honoured(self, tmp_path: Path) -> None:
        write(tmp_path / "db.yaml", {
            "db_file": "/var/lib/blockhost/vms.json",
            "ip_pool": {"network": "10.1.0.0/16", "start": "10.1.2.10", "end": "10.1.2.20",
                        "gateway": "10.1.0.1"},
            "vmid_pool": {"start": 5000, "end": 5100},
            "gc_grace_days": 3, "bridge": "vmbr1", "default_expiry_days": 30,
        })
        write(tmp_path / "web3-defaults.yaml", {
            "blockchain": {"chain_id": 11155111, "nft_contract": ADDR,
                           "rpc_url": "https://rpc.example"},
            "deployer": {"private_key_file": "/etc/blockhost/deployer.key"},
            "auth": {"otp_length": 6},
        })
        config = load(tmp_path, {"gc": {"grace_days": 2}})
        assert config.network.ip_pool.network == "10.1.0.0/16"
        assert [str(a) for a in config.network.ip_pool.bounds()] == ["10.1.2.10", "10.1.2.20"]
        assert config.network.vmid_range.start == 5000
        assert config.network.bridge == "vmbr1"
        assert config.chain.chain_id == 11155111
        assert config.chain.rpc_urls == ["https://rpc.example"]
        assert config.chain.nft_contract == ADDR
        assert config.gc.grace_days == 2  # blockhost.yaml wins over db.yaml


class TestEnvironment:
    def test_env_overrides_file(self, tmp_path: Path) -> None:
        env = {"BLOCKHOST_CHAIN__RPC_URLS": "http://a:8545, http://b:8545",
               "BLOCKHOST_CHAIN__CONFIRMATIONS": "finalized",
               "BLOCKHOST_PROXMOX__VERIFY_SSL": "false",
               "BLOCKHOST_SERVER_KEY_FILE": "/k/server.key",
               "BLOCKHOST_CHAIN__NFT_CONTRACT": ADDR,
               "BLOCKHOST_PLANS": "{1: {cores: 4}}",
               "UNRELATED": "1"}
        config = load(tmp_path, {"chain": {"confirmations": 3}}, env)
        assert config.chain.rpc_urls == ["http://a:8545", "http://b:8545"]
        assert config.chain.confirmations == "finalized"
        assert config.proxmox.verify_ssl is False
        assert str(config.server_key_file) == "/k/server.key"
        assert config.chain.nft_contract == ADDR  # hex stays a string
        assert config.plan_size(1).cores == 4

    def test_bad_env_value_names_the_key(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match=r"chain\.poll_interval"):
            load(tmp_path, {}, {"BLOCKHOST_CHAIN__POLL_INTERVAL": "soon"})

    def test_overlay_ignores_other_prefixes(self) -> None:
        assert env_overlay({"BLOCKHOSTX": "1", "BLOCKHOST_CONFIG": "/x"}) == {}


class TestBrokerAllocation:
    def test_ipv6_prefix_from_broker_file(self, tmp_path: Path) -> None:
        broker = tmp_path / "broker-allocation.json"
        broker.write_text(json.dumps({"prefix": "2001:db8:1::/64", "gateway": "2001:db8:1::1"}))
        config = load(tmp_path, {}, broker=broker)
        assert config.network.ipv6_pool.prefix == "2001:db8:1::/64"
        assert config.network.ipv6_pool.gateway == "2001:db8:1::1"

    def test_broken_broker_file(self, tmp_path: Path) -> None:
        broker = tmp_path / "broker-allocation.json"
        broker.write_text("{}")
        with pytest.raises(ConfigError, match="not a valid broker allocation"):
            load(tmp_path, {}, broker=broker)


def test_build_config_rejects_non_mapping_sections() -> None:
    with pytest.raises(ConfigError, match="chain"):
        build_config({"chain": ["x"]})
