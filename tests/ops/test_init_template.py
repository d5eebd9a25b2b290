"""The commented config ``blockhost init`` writes: every value through the YAML serializer."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from listener.config import build_config
from listener.ops.config_template import nest, render, scalar

NASTY = ["a: b", "#x", "- x", "yes", "null", "0x12", "", "'q'\"", "x\ny: 1", "{a}", "ü", "*ref"]


@pytest.mark.parametrize("value", NASTY)
def test_a_string_value_reads_back_exactly(value: str) -> None:
    text = render({"proxmox.pool": value, "vm.rpc_url": ""})
    assert yaml.safe_load(text) == {"proxmox": {"pool": value}, "vm": {"rpc_url": ""}}
    assert all(line.startswith(("#", "proxmox:", "vm:", "  ")) or line == ""
               for line in text.splitlines())


@given(st.text(max_size=40))
def test_any_text_stays_on_its_line(value: str) -> None:
    assert "\n" not in scalar(value)
    assert yaml.safe_load(scalar(value)) == value


def test_the_rendered_config_is_commented_and_valid() -> None:
    flat = {"chain.rpc_urls": ["https://rpc.example/v3/key?x=1#y"], "chain.chain_id": 5,
            "chain.start_block": 0, "server_key_file": "/etc/blockhost/server.key",
            "network.ip_pool": {"network": "10.0.0.0/24", "start": 10, "end": "10.0.0.20",
                                "gateway": "10.0.0.1"},
            "proxmox.verify_ssl": False}
    text = render(flat)
    config = build_config(yaml.safe_load(text))
    assert config.chain.rpc_urls == flat["chain.rpc_urls"]
    assert config.proxmox.verify_ssl is False
    assert text.count("\n# ") >= 4 and "  # several = failover" in text
    assert yaml.safe_load(text) == nest(flat)


def test_a_key_the_template_does_not_know_is_refused() -> None:
    with pytest.raises(ValueError, match="no place in the template"):
        render({"chain.bogus": 1})
