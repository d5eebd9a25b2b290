"""``blockhost init`` on a real anvil chain, through the installed ``blockhost`` command."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from web3 import Web3

from listener.config import load_config
from listener.devkit.devchain import DEV_PRIVATE_KEYS, Anvil
from tests.support.paths import REPO_ROOT

BIN = Path(sys.executable).parent


def blockhost(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLOCKHOST_")}
    return subprocess.run([str(BIN / "blockhost"), "--config", str(config), *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
                          stdin=subprocess.DEVNULL, env=env)


def secret_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return {
        "config": tmp_path / "etc" / "blockhost.yaml",
        "server_key": tmp_path / "etc" / "server.key",
        "deployer": secret_file(tmp_path / "deployer.key", DEV_PRIVATE_KEYS[0][2:] + "\n"),
        "token": secret_file(tmp_path / "pve-token", "token-secret\n"),
        "db": tmp_path / "state" / "blockhost.db",
    }


def host_flags(files: dict[str, Path]) -> list[str]:
    return ["--token-id", "blockhost@pve!listener", "--ip-network", "10.9.0.0/24",
            "--ip-start", "10", "--ip-end", "20", "--gateway", "10.9.0.1",
            "--deployer-key-file", str(files["deployer"]),
            "--server-key-file", str(files["server_key"]), "--token-file", str(files["token"]),
            "--db-path", str(files["db"])]


def init_flags(anvil: Anvil, files: dict[str, Path]) -> list[str]:
    return ["init", "--rpc-url", anvil.url, "--chain-id", "31337", "--deploy-contracts",
            *host_flags(files)]


def fingerprint(*paths: Path) -> list[tuple[bytes, int, int]]:
    return [(p.read_bytes(), p.stat().st_mtime_ns, stat.S_IMODE(p.stat().st_mode)) for p in paths]


def test_init_deploys_writes_a_config_that_loads_and_commands_run(
        anvil: Anvil, files: dict[str, Path]) -> None:
    proc = blockhost(files["config"], *init_flags(anvil, files))
    assert proc.returncode == 0, proc.stderr
    config = load_config(files["config"], environ={}, broker_allocation=None)
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    for address in (config.chain.subscription_contract, config.chain.nft_contract):
        assert address is not None and len(w3.eth.get_code(Web3.to_checksum_address(address))) > 0
    assert 0 < config.chain.start_block <= w3.eth.block_number
    assert config.proxmox.token_secret_file == files["token"]
    assert config.network.ip_pool.bounds()[0].exploded == "10.9.0.10"
    assert stat.S_IMODE(files["config"].stat().st_mode) == 0o640
    assert stat.S_IMODE(files["server_key"].stat().st_mode) == 0o600
    assert "token-secret" not in files["config"].read_text()
    shown = blockhost(files["config"], "keys", "show")
    assert shown.returncode == 0, shown.stderr
    assert f"server public key: {shown.stdout.strip()}" in proc.stdout


def test_a_second_run_keeps_everything_and_deploys_nothing(
        anvil: Anvil, files: dict[str, Path]) -> None:
    assert blockhost(files["config"], *init_flags(anvil, files)).returncode == 0
    before = fingerprint(files["config"], files["server_key"])
    block = Web3(Web3.HTTPProvider(anvil.url)).eth.block_number
    again = blockhost(files["config"], *init_flags(anvil, files))
    assert again.returncode == 0, again.stderr
    assert "config" in again.stdout and "kept (it exists; --force rewrites it)" in again.stdout
    assert "kept (init never replaces a key)" in again.stdout
    assert "contracts not deployed" in again.stdout
    assert fingerprint(files["config"], files["server_key"]) == before
    assert Web3(Web3.HTTPProvider(anvil.url)).eth.block_number == block
    bare = blockhost(files["config"], "init")  # no flags needed once configured
    assert bare.returncode == 0, bare.stderr
    assert fingerprint(files["config"], files["server_key"]) == before


def test_force_rewrites_the_config_but_never_the_key(
        anvil: Anvil, files: dict[str, Path]) -> None:
    assert blockhost(files["config"], *init_flags(anvil, files)).returncode == 0
    first = load_config(files["config"], environ={}, broker_allocation=None)
    key = files["server_key"].read_bytes()
    proc = blockhost(files["config"], "init", "--force", "--rpc-url", anvil.url,
                     "--chain-id", "31337", "--subscription-contract",
                     str(first.chain.subscription_contract), "--nft-contract",
                     str(first.chain.nft_contract), "--start-block", "3",
                     "--vm-rpc-url", "https://rpc.public.example", *host_flags(files))
    assert proc.returncode == 0, proc.stderr
    assert "rewritten" in proc.stdout
    second = load_config(files["config"], environ={}, broker_allocation=None)
    assert (second.vm.rpc_url, second.chain.start_block) == ("https://rpc.public.example", 3)
    assert second.chain.nft_contract == first.chain.nft_contract
    assert files["server_key"].read_bytes() == key
    assert stat.S_IMODE(files["config"].stat().st_mode) == 0o640


def test_missing_flags_without_a_terminal_exit_2_naming_them(files: dict[str, Path]) -> None:
    proc = blockhost(files["config"], "init", "--chain-id", "1", "--token-id", "a@pve!b")
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert "\n" not in line
    for flag in ("--rpc-url", "--subscription-contract", "--nft-contract", "--start-block",
                 "--ip-network", "--ip-start", "--ip-end", "--gateway"):
        assert flag in line
    assert "--chain-id" not in line and "--token-id" not in line
    assert not files["config"].parent.exists()


def test_an_open_token_file_is_reported_with_the_chmod_fix(
        anvil: Anvil, files: dict[str, Path]) -> None:
    files["token"].chmod(0o644)
    proc = blockhost(files["config"], *init_flags(anvil, files))
    assert proc.returncode == 1
    assert f"run `chmod 600 {files['token']}`" in proc.stderr
    assert "token-secret" not in proc.stderr + proc.stdout
    files["token"].chmod(0o600)
    assert blockhost(files["config"], "init").returncode == 0


def test_a_missing_deployer_key_is_reported(files: dict[str, Path], anvil: Anvil) -> None:
    files["deployer"].unlink()
    proc = blockhost(files["config"], *init_flags(anvil, files))
    assert proc.returncode == 1
    assert f"deployer key file {files['deployer']} not found" in proc.stderr
    assert not files["config"].exists()


def test_a_wrong_chain_id_deploys_and_writes_nothing(anvil: Anvil, files: dict[str, Path]) -> None:
    flags = init_flags(anvil, files)
    flags[flags.index("31337")] = "1"
    proc = blockhost(files["config"], *flags)
    assert proc.returncode == 1
    assert "the RPC serves chain 31337, not --chain-id 1" in proc.stderr
    assert Web3(Web3.HTTPProvider(anvil.url)).eth.block_number == 0
    assert not files["config"].exists() and not files["server_key"].exists()


def test_a_bad_value_names_its_key_and_writes_nothing(files: dict[str, Path]) -> None:
    proc = blockhost(files["config"], "init", "--rpc-url", "ftp://rpc.example", "--chain-id", "1",
                     "--subscription-contract", "0x" + "ab" * 20, "--nft-contract",
                     "0x" + "cd" * 20, "--start-block", "0", *host_flags(files))
    assert proc.returncode == 1
    assert "chain.rpc_urls" in proc.stderr and "http(s)://" in proc.stderr
    assert not files["config"].exists()


def on_terminal(config: Path, args: list[str], answers: str) -> tuple[int, str]:
    """Run ``blockhost init`` with a pseudo-terminal as stdin/stdout, typing ``answers``."""
    import pty
    import select

    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLOCKHOST_")}
    proc = subprocess.Popen([str(BIN / "blockhost"), "--config", str(config), *args],
                            stdin=slave, stdout=slave, stderr=slave, cwd=REPO_ROOT, env=env)
    os.close(slave)
    os.write(master, answers.encode())
    out = b""
    while select.select([master], [], [], 60)[0]:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the command ended and closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return proc.wait(timeout=60), out.decode(errors="replace")


def test_on_a_terminal_it_asks_for_what_is_missing(files: dict[str, Path]) -> None:
    flags = host_flags(files)
    for flag in ("--ip-end", "--gateway"):
        del flags[flags.index(flag):flags.index(flag) + 2]
    args = ["init", "--chain-id", "1", "--subscription-contract", "0x" + "ab" * 20,
            "--nft-contract", "0x" + "cd" * 20, "--start-block", "7", *flags]
    code, out = on_terminal(files["config"], args, "https://rpc.example/\n20\n10.9.0.1\n")
    assert code == 0, out
    assert "RPC URL of the chain (repeat for failover) [--rpc-url]:" in out
    assert "the VMs' IPv4 gateway [--gateway]:" in out
    config = load_config(files["config"], environ={}, broker_allocation=None)
    assert config.chain.rpc_urls == ["https://rpc.example/"]
    assert config.network.ip_pool.bounds()[1].exploded == "10.9.0.20"
    assert config.network.ip_pool.gateway == "10.9.0.1"


def test_an_empty_answer_on_a_terminal_is_still_missing(files: dict[str, Path]) -> None:
    args = ["init", "--chain-id", "1", "--subscription-contract", "0x" + "ab" * 20,
            "--nft-contract", "0x" + "cd" * 20, "--start-block", "7", *host_flags(files)]
    code, out = on_terminal(files["config"], args, "\n")
    assert code == 2
    assert "missing --rpc-url:" in out
    assert not files["config"].exists()


def test_an_invalid_existing_config_is_named_and_left_alone(files: dict[str, Path]) -> None:
    files["config"].parent.mkdir()
    files["config"].write_text("chain: {bogus: 1}\n")
    before = fingerprint(files["config"])
    proc = blockhost(files["config"], "init")
    assert proc.returncode == 1
    assert "chain.bogus: unknown key" in proc.stderr and "rerun with --force" in proc.stderr
    assert fingerprint(files["config"]) == before
