"""Commands that follow the contract refuse a config without one in one line, also under
``python -O`` (a typed check, never an ``assert``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from listener.config import build_config, require_for
from listener.devkit.devchain import Anvil
from listener.errors import ConfigError
from tests.support.paths import REPO_ROOT

SUBS = "0x" + "ab" * 20


def python_o(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLOCKHOST_")}
    return subprocess.run([sys.executable, "-O", *args], capture_output=True, text=True,
                          timeout=60, cwd=REPO_ROOT, env=env)


@pytest.mark.parametrize("command", ["listen", "replay", "reorg"])
def test_following_commands_need_the_contract(command: str) -> None:
    with pytest.raises(ConfigError) as info:
        require_for(command, build_config({"chain": {"rpc_urls": ["https://rpc.example"]}}))
    message = str(info.value)
    assert f"`blockhost {command}`" in message and "chain.subscription_contract is not set" in message
    assert "\n" not in message


def test_they_need_an_rpc_url_too() -> None:
    with pytest.raises(ConfigError, match=r"`blockhost listen`: config error: chain\.rpc_urls"):
        require_for("listen", build_config({"chain": {"subscription_contract": SUBS}}))


def test_other_commands_and_a_complete_config_pass() -> None:
    bare = build_config({})
    assert require_for("status", bare) is bare
    full = build_config({"chain": {"rpc_urls": ["https://rpc.example"],
                                   "subscription_contract": SUBS}})
    assert require_for("listen", full) is full


@pytest.mark.parametrize("argv", [["listen"], ["replay", "--from-block", "0"], ["reorg", "show"]])
def test_the_cli_under_python_dash_o_says_one_line(tmp_path: Path, argv: list[str]) -> None:
    config = tmp_path / "blockhost.yaml"
    config.write_text(yaml.safe_dump({"chain": {"rpc_urls": ["http://127.0.0.1:9"]},
                                      "db": {"path": str(tmp_path / "state.db")}}))
    proc = python_o("-m", "listener.cli", "--config", str(config), *argv)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "chain.subscription_contract is not set" in proc.stderr
    assert "AssertionError" not in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "state.db").exists()


def test_scan_and_replay_check_it_themselves_under_python_dash_o(anvil: Anvil, tmp_path: Path) -> None:
    """Below the CLI (a caller that skipped the config check): ConfigError, not a crash."""
    script = f"""
import sys
from listener.chain.journal import Store
from listener.chain.replay import replay
from listener.chain.rpc import RpcClient
from listener.chain.scanner import scan_once
from listener.config import ChainConfig
from listener.errors import ConfigError
assert False, "this assert must be gone under -O"
chain = ChainConfig(rpc_urls=[{anvil.url!r}])
rpc, store = RpcClient(chain.rpc_urls), Store.open({str(tmp_path / "db")!r})
for call in (lambda: scan_once(rpc, store, chain),
             lambda: replay(rpc, store, chain, 0, 0, dry_run=True)):
    try:
        call()
    except ConfigError as exc:
        print("refused:", exc)
"""
    proc = python_o("-c", script)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2
    assert all(line.startswith("refused: config error: chain.subscription_contract is not set")
               for line in lines)
