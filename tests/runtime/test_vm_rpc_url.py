"""``vm.rpc_url``: the only RPC endpoint tenants' VMs are given, never ``chain.rpc_urls``."""

from __future__ import annotations

import threading

import pytest
from structlog.testing import capture_logs

from listener.config import build_config
from listener.errors import ConfigError
from listener.runtime import wiring

OPERATOR_RPC = {"rpc_urls": ["https://x.invalid/v3/SECRETKEY"]}


def test_vms_get_no_rpc_url_without_vm_rpc_url() -> None:
    config = build_config({"chain": OPERATOR_RPC})
    assert wiring.rpc_url_for_vm(config) == ""
    assert "vm.rpc_url is not set" in (wiring.missing_vm_rpc_url(config) or "")


def test_vms_get_exactly_vm_rpc_url() -> None:
    config = build_config({"chain": OPERATOR_RPC, "vm": {"rpc_url": "https://rpc.public.example"}})
    assert wiring.rpc_url_for_vm(config) == "https://rpc.public.example"
    assert wiring.missing_vm_rpc_url(config) is None


@pytest.mark.parametrize("bad", ["ftp://rpc.example", "rpc.example:8545", "https://", "http:// x"])
def test_vm_rpc_url_must_be_http_or_https(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"vm\.rpc_url"):
        build_config({"vm": {"rpc_url": bad}})


def test_the_start_check_warns_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wiring, "_VM_RPC_URL_CHECKED", threading.Event())
    config = build_config({"chain": OPERATOR_RPC})
    with capture_logs() as logs:
        for _thread in range(3):
            wiring._check_vm_rpc_url_once(config)
    assert [(e["log_level"], e["event"]) for e in logs] == [
        ("warning", "config.vm_rpc_url_unset")]
    assert "SECRETKEY" not in str(logs)
