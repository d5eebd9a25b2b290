"""`blockhost mint` / `blockhost-mint-nft` and `blockhost user extend` against anvil, run as
real processes (argv carries no secret: keys come from 0600 files)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from eth_account import Account
from web3 import Web3

from listener.chain.contracts import deploy_all, load_abi, send_transaction
from listener.cli.main import main
from listener.crypto.secp256k1 import public_key_from_private
from listener.devkit.devchain import DEV_PRIVATE_KEYS, Anvil
from listener.writeback.tx_store import TxStore
from tests.support.paths import REPO_ROOT

OWNER, ALICE = (Account.from_key(k) for k in DEV_PRIVATE_KEYS[:2])
MINT_MAIN = "import sys; from listener.cli.main import mint_nft_main; sys.exit(mint_nft_main())"


def _run(*argv: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", code, *argv] if code else [
        sys.executable, "-m", "listener.cli", *argv]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})


def _main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the CLI in this process (cheaper than a process start); (code, stdout, stderr)."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _key_file(path: Path, key: bytes) -> Path:
    path.write_text(key.hex())
    path.chmod(0o600)
    return path


def test_mint_cli_mints_once_per_machine_id(anvil: Anvil, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    deployment = deploy_all(w3, DEV_PRIVATE_KEYS[0], initial_plan=None)
    config = tmp_path / "blockhost.yaml"
    config.write_text(yaml.safe_dump({
        "chain": {"rpc_urls": [anvil.url], "nft_contract": deployment.nft, "confirmations": 0},
        "signer": {"private_key_file": str(_key_file(tmp_path / "deployer.key",
                                                     bytes(OWNER.key)))},
        "db": {"path": str(tmp_path / "blockhost.db")},
    }))
    flags = ["--owner-wallet", ALICE.address, "--machine-id", "blockhost-007",
             "--user-encrypted", "0xdeadbeef", "--expires-at", "2000000000"]
    first = _run("--config", str(config), "mint", *flags)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "0"
    # the alias, with --config after the flags as the seed's scripts pass it
    again = _run(*flags, "--config", str(config), code=MINT_MAIN)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "0"
    code, out, err = _main(capsys, "--config", str(config), "mint", "--owner-wallet",
                           ALICE.address, "--machine-id", "blockhost-008")
    assert (code, out.strip()) == (0, "1"), err
    nft = w3.eth.contract(address=deployment.nft, abi=load_abi("AccessCredentialNFT"))
    assert nft.functions.totalSupply().call() == 2
    data = nft.functions.getAccessData(0).call()
    assert bytes(data[0]) == bytes.fromhex("deadbeef") and data[1] == "blockhost-access"
    assert data[3] == 2_000_000_000
    store = TxStore.open(tmp_path / "blockhost.db")
    assert [r.idempotency_key for r in store.requests()] == [
        "mint:manual:blockhost-007", "mint:manual:blockhost-008"]
    store.conn.close()
    # same machine id, different details: refused, not minted again
    code, _out, err = _main(capsys, "--config", str(config), "mint", "--owner-wallet",
                            ALICE.address, "--machine-id", "blockhost-007")
    assert code == 1 and "already minted" in err
    assert len(err.strip().splitlines()) == 1
    code, _out, err = _main(capsys, "--config", str(config), "mint", "--owner-wallet", "0x12",
                            "--machine-id", "x")
    assert code == 1 and "--owner-wallet" in err
    with pytest.raises(SystemExit) as usage:
        main(["--config", str(config), "mint", "--machine-id", "x"])
    assert usage.value.code == 2
    assert nft.functions.totalSupply().call() == 2
    log_text = first.stderr + again.stderr
    assert OWNER.key.hex().removeprefix("0x") not in log_text


def test_user_extend_pays_and_moves_expiry(anvil: Anvil, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    deployment = deploy_all(w3, DEV_PRIVATE_KEYS[0])
    token = w3.eth.contract(address=deployment.stablecoin, abi=load_abi("MockStablecoin"))
    send_transaction(w3, OWNER, token.functions.mint(ALICE.address, 10**9))
    wallet = _key_file(tmp_path / "alice.key", bytes(ALICE.key))
    server_pub = "0x" + public_key_from_private(b"\x11" * 32).hex()
    code, out, err = _main(capsys, "user", "subscribe", "--rpc-url", anvil.url, "--contract",
                           deployment.subscriptions, "--server-public-key", server_pub,
                           "--private-key-file", str(wallet), "--plan-id", "1", "--days", "2")
    assert code == 0, err
    sub = json.loads(out)
    code, out, err = _main(capsys, "user", "extend", "--rpc-url", anvil.url, "--contract",
                           deployment.subscriptions, "--private-key-file", str(wallet),
                           "--subscription-id", str(sub["subscription_id"]), "--days", "3")
    assert code == 0, err
    result = json.loads(out)
    assert result["new_expires_at"] == sub["expires_at"] + 3 * 86_400
    subs = w3.eth.contract(address=deployment.subscriptions, abi=load_abi("BlockhostSubscriptions"))
    assert subs.functions.getSubscription(sub["subscription_id"]).call()[2] == \
        result["new_expires_at"]
    code, _out, err = _main(capsys, "user", "extend", "--rpc-url", anvil.url, "--contract",
                            deployment.subscriptions, "--private-key-file", str(wallet),
                            "--subscription-id", "99", "--days", "3")
    assert code == 1 and "does not exist" in err
