"""`blockhost doctor` against anvil and the PVE simulator: all ✓ on the dev set-up, and each
thing an operator gets wrong shows as its own ✗ line (with a fix) and exit code 1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from eth_account import Account
from web3.types import RPCEndpoint

from listener.cli.main import main
from listener.devkit.devenv import DevEnv, write_secret_file
from tests.ops.doctor.conftest import config_with, doctor_json, failing
from tests.provisioner.pvesim.acl_setup import with_pool_privileges, without
from tests.support.pve import start_sim


def run_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "listener.cli", "--config", str(config),
                           "doctor", *args], capture_output=True, text=True, timeout=120,
                          check=False)


def test_good_setup_passes_every_check_through_the_real_cli(env: DevEnv) -> None:
    result = run_cli(env.config_path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert not [line for line in lines if line.startswith("✗")]
    names = ("config", "signer key", "server key", "PVE token secret", "subscription contract",
             "NFT contract", "signer may mint", "signer balance", "PVE API", "PVE privileges",
             "template", "pool", "storage", "snippet storage", "VMID and IP pools", "database",
             "metrics port", "VMs awaiting `blockhost markers migrate`")
    for name in names:
        assert any(line.startswith(f"✓ {name} ") for line in lines), (name, result.stdout)
    assert any(line.startswith(f"✓ RPC {env.anvil.url}") for line in lines)
    assert lines[-1].startswith("19 passed, 0 failed")


def test_json_is_a_list_of_checks(env: DevEnv, capsys: pytest.CaptureFixture[str]) -> None:
    code, checks = doctor_json(env.config_path, capsys)
    assert code == 0 and failing(checks) == []
    assert set(checks["PVE API"]) == {"name", "ok", "detail", "fix", "skipped"}
    assert checks["bridge"]["skipped"]  # this host is no simulated node


def test_wrong_token_secret_fails_the_pve_api_check_through_the_real_cli(
        env: DevEnv, tmp_path: Path) -> None:
    write_secret_file(tmp_path / "pve-token", "not-the-secret")
    config = config_with(env, tmp_path, {"proxmox": {"token_secret_file":
                                                     str(tmp_path / "pve-token")}})
    result = run_cli(config)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    failed = [line for line in result.stdout.splitlines() if line.startswith("✗")]
    assert len(failed) == 1 and failed[0].startswith("✗ PVE API") and "401" in failed[0]
    assert "not-the-secret" not in result.stdout
    assert "token was refused" in result.stdout  # the fix line


def test_missing_template(env: DevEnv, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    code, checks = doctor_json(config_with(env, tmp_path, {"proxmox": {"template_vmid": 9555}}),
                               capsys)
    assert code == 1 and failing(checks) == ["template"]
    assert "no VM 9555" in checks["template"]["detail"]
    assert "template build" in checks["template"]["fix"]


def test_vm_that_is_not_a_template(env: DevEnv, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    env.sim.create_vm(vmid=9600, name="plain", status="stopped")
    try:
        code, checks = doctor_json(
            config_with(env, tmp_path, {"proxmox": {"template_vmid": 9600}}), capsys)
    finally:
        env.sim.delete_vm(9600)
    assert code == 1 and failing(checks) == ["template"]
    assert "is not a template" in checks["template"]["detail"]


def test_wrong_chain_id(env: DevEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, checks = doctor_json(config_with(env, tmp_path, {"chain": {"chain_id": 5}}), capsys)
    rpc = f"RPC {env.anvil.url}"
    assert code == 1 and failing(checks) == [rpc]
    assert checks[rpc]["detail"] == "serves chain 31337, the config says 5"
    assert checks["NFT contract"]["skipped"]


def test_address_without_code(env: DevEnv, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    empty = "0x" + "12" * 20
    code, checks = doctor_json(
        config_with(env, tmp_path, {"chain": {"subscription_contract": empty}}), capsys)
    assert code == 1 and failing(checks) == ["subscription contract"]
    assert "no contract code at" in checks["subscription contract"]["detail"]


def test_nft_address_of_another_contract_fails_the_abi_view(
        env: DevEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = config_with(env, tmp_path,
                         {"chain": {"nft_contract": env.deployment["subscriptions"]}})
    code, checks = doctor_json(config, capsys)
    assert code == 1 and "NFT contract" in failing(checks)
    assert "totalSupply() failed" in checks["NFT contract"]["detail"]


def test_unfunded_signer(env: DevEnv, capsys: pytest.CaptureFixture[str]) -> None:
    signer = env.user(0).address
    balance = env.w3.eth.get_balance(signer)
    env.w3.provider.make_request(RPCEndpoint("anvil_setBalance"), [signer, "0x0"])
    try:
        code, checks = doctor_json(env.config_path, capsys)
    finally:
        env.w3.provider.make_request(RPCEndpoint("anvil_setBalance"), [signer, hex(balance)])
    assert code == 1 and failing(checks) == ["signer balance"]
    assert f"send native coin to {signer}" == checks["signer balance"]["fix"]


def test_signer_that_does_not_own_the_nft(env: DevEnv, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    other = Account.create()
    write_secret_file(tmp_path / "other.key", other.key.hex().removeprefix("0x"))
    config = config_with(env, tmp_path,
                         {"signer": {"private_key_file": str(tmp_path / "other.key")}})
    code, checks = doctor_json(config, capsys)
    assert code == 1 and "signer may mint" in failing(checks)
    assert f"the signer is {other.address}" in checks["signer may mint"]["detail"]


def test_key_file_open_to_others(env: DevEnv, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "server.key"
    key.write_bytes((env.workdir / "server.key").read_bytes())
    os.chmod(key, 0o644)
    code, checks = doctor_json(config_with(env, tmp_path, {"server_key_file": str(key)}),
                               capsys)
    assert code == 1 and failing(checks) == ["server key"]
    assert checks["server key"]["fix"] == f"chmod 600 {key}"


def test_metrics_port_in_use(env: DevEnv, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = config_with(env, tmp_path, {"metrics": {"listen": f"127.0.0.1:{port}"}})
        code, checks = doctor_json(config, capsys)
    assert code == 1 and failing(checks) == ["metrics port"]


def test_invalid_config_is_one_failed_check(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "blockhost.yaml"
    config.write_text("chain: {confirmations: -3}\n")
    code, checks = doctor_json(config, capsys)
    assert code == 1 and list(checks) == ["config"]
    assert "chain.confirmations" in checks["config"]["detail"]


def test_token_without_vm_allocate(env: DevEnv, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    sim = with_pool_privileges(start_sim(tmp_path, snippets=True), without("VM.Allocate"))
    try:
        write_secret_file(tmp_path / "pool-token", sim.token_secret)
        config = config_with(env, tmp_path, {"proxmox": {
            "api_url": sim.url, "token_id": sim.token_id, "verify_ssl": str(sim.ca_path),
            "token_secret_file": str(tmp_path / "pool-token"),
            "snippets_dir": str(sim.snippets_dir)}})
        code, checks = doctor_json(config, capsys)
    finally:
        sim.stop()
    assert code == 1 and failing(checks) == ["PVE privileges"]
    assert checks["PVE privileges"]["detail"] == "the token lacks /pool/blockhost: VM.Allocate"
    assert "--roles PVEVMAdmin" in checks["PVE privileges"]["fix"]


def test_pool_scoped_token_with_its_full_role_passes(env: DevEnv, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    sim = start_sim(tmp_path, snippets=True)
    try:
        write_secret_file(tmp_path / "pool-token", sim.token_secret)
        config = config_with(env, tmp_path, {"proxmox": {
            "api_url": sim.url, "token_id": sim.token_id, "verify_ssl": str(sim.ca_path),
            "token_secret_file": str(tmp_path / "pool-token"),
            "snippets_dir": str(sim.snippets_dir)}})
        code, checks = doctor_json(config, capsys)
    finally:
        sim.stop()
    assert code == 0 and failing(checks) == []


def test_an_unreachable_rpc_url_is_one_redacted_line(env: DevEnv, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dead = f"http://127.0.0.1:{port}/v3/SECRETKEY9f8e7d6c5b4a"
    config = config_with(env, tmp_path, {"chain": {"rpc_urls": [dead, env.anvil.url]}})
    code = main(["--config", str(config), "doctor"])
    out = capsys.readouterr().out
    assert code == 1 and "SECRETKEY" not in out
    [line] = [line for line in out.splitlines() if line.startswith("✗")]
    assert line.startswith(f"✗ RPC http://127.0.0.1:{port}/v3/***") and "no answer" in line
    assert "✓ NFT contract" in out  # the other URL serves the right chain
