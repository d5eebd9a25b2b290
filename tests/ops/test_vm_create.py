"""`blockhost vm create` / `blockhost-vm-create` on a real anvil chain and the PVE simulator.

Real processes throughout: the command runs as a subprocess (one JSON line on stdout is the
contract the old handlers parse), and the crash test SIGKILLs it mid-clone and reruns it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from listener.chain.contracts import load_artifact
from listener.cli.main import main
from listener.devkit.devenv import DevEnv, start_dev_env
from listener.userkit.subscriber import credentials
from provisioner.backend import parse_marker
from tests.support.crashes import sigkill_when
from tests.support.paths import REPO_ROOT

BIN = Path(sys.executable).parent
PUBLIC_SECRET = "blockhost-access"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevEnv]:
    environment = start_dev_env(tmp_path_factory.mktemp("vmcreate") / "env", confirmations=0,
                                clone_seconds=1.0)
    try:
        yield environment
    finally:
        environment.close()


def run(env: DevEnv, *args: str, alias: bool = False, stdin: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    """The console script, as an operator (or the old engine) would run it."""
    if alias:  # the seed's name, with --config after the command
        argv = [str(BIN / "blockhost-vm-create"), *args, "--config", str(env.config_path)]
    else:
        argv = [str(BIN / "blockhost"), "--config", str(env.config_path), "vm", "create", *args]
    return subprocess.run(argv, capture_output=True, text=True, input=stdin, timeout=180,
                          cwd=REPO_ROOT)


def result_of(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout  # everything else goes to stderr
    return json.loads(lines[0])


def signature_of(account: Any, message: str = PUBLIC_SECRET) -> str:
    signed = Account.sign_message(encode_defunct(text=message), account.key)
    return "0x" + bytes(signed.signature).hex()


def total_supply(env: DevEnv) -> int:
    nft = env.w3.eth.contract(address=env.deployment["nft"],
                              abi=load_artifact("AccessCredentialNFT")["abi"])
    return int(nft.functions.totalSupply().call())


def sim_vms(env: DevEnv) -> dict[int, dict[str, Any]]:
    return {int(v["vmid"]): v for v in env.sim.state()["vms"] if not v.get("template")}


def test_dry_run_and_mock_allocate_nothing(env: DevEnv) -> None:
    owner = env.user(1).address
    planned = result_of(run(env, "plan-1", "--owner-wallet", owner, "--mock"))
    assert planned["status"] == "planned" and planned["mock"] is True
    assert planned["vmid"] == 100000 and planned["ipv4"] == "10.77.0.10"
    assert planned["nft"] == "would mint" and planned["token_id"] is None
    dry = result_of(run(env, "plan-1", "--owner-wallet", owner))
    assert dry["status"] == "planned" and dry["mock"] is False
    assert sim_vms(env) == {} and total_supply(env) == 0

    refused = run(env, "plan-1", "--owner-wallet", owner, "--mock", "--apply")
    assert refused.returncode == 2 and refused.stdout == ""
    assert "--mock" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("args", "message"), [
    (["bad_name!", "--owner-wallet", "0x" + "11" * 20], "not valid"),
    (["ok-1", "--owner-wallet", "0x1234"], "not an address"),
    (["ok-1", "--owner-wallet", "0x" + "11" * 20, "--cpu", "0"], "--cpu must be at least 1"),
    (["ok-1", "--owner-wallet", "0x" + "11" * 20, "--tags", "sub-9"], "reserved"),
    (["ok-1", "--owner-wallet", "0x" + "11" * 20, "--ip", "10.77.0.300"], "not an IP"),
    (["ok-1", "--owner-wallet", "0x" + "11" * 20, "--user-signature", "0x12"], "130 hex"),
    (["ok-1", "--owner-wallet", "0x" + "11" * 20, "--cloud-init", "nope"], "not found"),
])
def test_bad_flags_get_one_clear_line(env: DevEnv, args: list[str], message: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--config", str(env.config_path), "vm", "create", *args, "--apply"])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and message in lines[0], err


def test_a_signature_from_another_wallet_is_refused_before_any_effect(env: DevEnv) -> None:
    proc = run(env, "wrong-sig", "--owner-wallet", env.user(1).address, "--apply",
               "--user-signature-file", "-", stdin=signature_of(env.user(2)) + "\n")
    assert proc.returncode == 1 and "not by --owner-wallet" in proc.stderr
    assert signature_of(env.user(2)) not in proc.stderr  # the secret is never echoed
    assert "wrong-sig" not in {v.get("name") for v in sim_vms(env).values()}


def test_apply_creates_mints_and_seals_the_details(env: DevEnv) -> None:
    owner = env.user(3)
    sig_file = env.workdir / "sig-3"
    sig_file.write_text(signature_of(owner))
    os.chmod(sig_file, 0o600)
    before = total_supply(env)
    out = result_of(run(env, "box-1", "--owner-wallet", owner.address, "--apply",
                        "--user-signature-file", str(sig_file), "--cpu", "2", "--memory",
                        "1024", "--tags", "team-a", "--expiry-days", "3", alias=True))
    assert out["status"] == "created" and out["nft"] == "minted"
    assert total_supply(env) == before + 1
    vm = sim_vms(env)[out["vmid"]]
    assert vm["name"] == "box-1" and vm["status"] == "running" and vm["pool"] == "blockhost"
    marker = parse_marker(vm["description"])
    assert marker is not None and marker.subscription_id is None and marker.name == "box-1"
    assert {"blockhost", "manual", "team-a"} <= set(vm["tags"])
    assert not any(t.startswith("sub-") for t in vm["tags"])
    details = credentials(env.w3, owner, nft_contract=env.deployment["nft"],
                          token_id=out["token_id"])
    assert details.hostname == out["ipv4"] and details.username == "admin"
    assert abs(out["expires_at"] - (time.time() + 3 * 86400)) < 600
    # nothing secret was stored: the signature is in no row of the database
    dump = "\n".join(env.db_rows("SELECT request FROM manual_vms")[0])
    assert signature_of(owner)[2:] not in dump and "team-a" in dump

    again = run(env, "box-1", "--owner-wallet", owner.address, "--apply",
                "--user-signature-file", str(sig_file))
    assert again.returncode == 1 and "already exists" in again.stderr
    assert total_supply(env) == before + 1 and len(
        [v for v in sim_vms(env).values() if v["name"] == "box-1"]) == 1

    listed = subprocess.run([str(BIN / "blockhost"), "--config", str(env.config_path), "vm",
                             "list", "--json"], capture_output=True, text=True, check=True)
    row = next(r for r in json.loads(listed.stdout)["vms"] if r["name"] == "box-1")
    assert row["power"] == "running" and row["subscription_id"] is None

    destroyed = subprocess.run([str(BIN / "blockhost"), "--config", str(env.config_path), "vm",
                                "destroy", "box-1", "--execute"], capture_output=True, text=True)
    assert destroyed.returncode == 0, destroyed.stderr
    assert out["vmid"] not in sim_vms(env)


def test_skip_mint_creates_without_a_chain_write(env: DevEnv) -> None:
    before = total_supply(env)
    out = result_of(run(env, "box-2", "--owner-wallet", env.user(2).address, "--apply",
                        "--skip-mint", "--nft-token-id", "77", "--vmid", "100321"))
    assert out["nft"] == "skipped" and out["token_id"] == 77 and out["vmid"] == 100321
    assert total_supply(env) == before
    assert sim_vms(env)[100321]["status"] == "running"
    missing = run(env, "box-3", "--owner-wallet", env.user(2).address, "--apply", "--skip-mint")
    assert missing.returncode == 1 and "NFT_TOKEN_ID" in missing.stderr
    assert "box-3" not in {v["name"] for v in sim_vms(env).values()}


def test_sigkill_mid_clone_then_rerun_resumes_the_same_vm_and_mint(env: DevEnv) -> None:
    owner = env.user(1)
    before = total_supply(env)
    argv = [str(BIN / "blockhost"), "--config", str(env.config_path), "vm", "create", "box-4",
            "--owner-wallet", owner.address, "--apply", "--user-signature-file", "-"]
    with open(env.workdir / "box-4.log", "wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=log, stderr=log, cwd=REPO_ROOT)
        assert proc.stdin is not None
        proc.stdin.write((signature_of(owner) + "\n").encode())
        proc.stdin.close()
        sigkill_when(proc, lambda: any(v.get("lock") == "clone" for v in sim_vms(env).values()),
                     what="the clone", output=(env.workdir / "box-4.log").read_text,
                     timeout=120)
    assert total_supply(env) == before + 1  # the mint happened before the clone

    out = result_of(run(env, "box-4", "--owner-wallet", owner.address, "--apply",
                        "--user-signature-file", "-", stdin=signature_of(owner) + "\n"))
    assert out["status"] == "created" and total_supply(env) == before + 1
    named = [v for v in sim_vms(env).values() if v["name"] == "box-4"]
    assert len(named) == 1 and named[0]["vmid"] == out["vmid"] and named[0]["status"] == "running"
    details = credentials(env.w3, owner, nft_contract=env.deployment["nft"],
                          token_id=out["token_id"])
    assert details.hostname == out["ipv4"]


def test_a_vmid_taken_behind_our_back_is_skipped_and_the_foreign_vm_untouched(
        env: DevEnv) -> None:
    owner = env.user(3).address
    taken = result_of(run(env, "box-5", "--owner-wallet", owner))["vmid"]
    env.sim.create_vm(vmid=taken, name="someone-else", node="pve1")
    out = result_of(run(env, "box-5", "--owner-wallet", owner, "--apply", "--skip-mint",
                        "--nft-token-id", "5"))
    assert out["vmid"] != taken
    assert sim_vms(env)[taken]["name"] == "someone-else"
    assert sim_vms(env)[out["vmid"]]["name"] == "box-5"
    explicit = run(env, "box-6", "--owner-wallet", owner, "--apply", "--skip-mint",
                   "--nft-token-id", "6", "--vmid", str(taken))
    assert explicit.returncode == 1  # quarantined in the inventory: never handed out again
    assert f"vmid {taken} is already in use" in explicit.stderr and "--vmid" in explicit.stderr
    env.sim.create_vm(vmid=100400, name="another-one", node="pve1")
    fresh = run(env, "box-7", "--owner-wallet", owner, "--apply", "--skip-mint",
                "--nft-token-id", "7", "--vmid", "100400")
    assert fresh.returncode == 1 and "--vmid 100400 is taken on Proxmox" in fresh.stderr
    assert sim_vms(env)[100400]["name"] == "another-one"
    assert "nothing was kept" in fresh.stderr
    retried = result_of(run(env, "box-7", "--owner-wallet", owner, "--apply", "--skip-mint",
                            "--nft-token-id", "7"))
    assert retried["vmid"] != 100400 and sim_vms(env)[100400]["name"] == "another-one"


def test_gc_suspends_then_destroys_an_expired_manual_vm(env: DevEnv) -> None:
    """`blockhost-vm-gc --execute` (the daily timer) covers VMs made by hand, by wall clock."""
    out = result_of(run(env, "box-8", "--owner-wallet", env.user(3).address, "--apply",
                        "--skip-mint", "--nft-token-id", "8", "--expiry-days", "1"))
    gc = [str(BIN / "blockhost-vm-gc"), "--config", str(env.config_path), "--json"]

    def expire(seconds_ago: int) -> None:
        conn = sqlite3.connect(env.db_path)
        with conn:
            conn.execute("UPDATE manual_vms SET expires_at = ? WHERE vm_id = (SELECT id FROM "
                         "vms WHERE name = 'box-8' AND state != 'destroyed')",
                         (int(time.time()) - seconds_ago,))
        conn.close()

    def steps(*extra: str) -> list[dict[str, Any]]:
        proc = subprocess.run([*gc, *extra], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return [s for s in json.loads(proc.stdout)["steps"] if s["vm_name"] == "box-8"]

    assert steps() == []  # not expired yet
    expire(60)
    planned = steps()
    assert [(s["action"], s["result"]) for s in planned] == [("stop", "planned")]
    assert sim_vms(env)[out["vmid"]]["status"] == "running"  # a dry run touches nothing
    assert [s["result"] for s in steps("--execute")] == ["done"]
    assert sim_vms(env)[out["vmid"]]["status"] == "stopped"
    assert steps("--execute") == []  # already suspended: nothing more until grace ends
    expire(2 * 86_400)  # grace (1 day in this env) is over
    assert [(s["action"], s["result"]) for s in steps("--execute")] == [("destroy", "done")]
    assert out["vmid"] not in sim_vms(env)
    assert env.db_rows("SELECT state FROM vms WHERE name = 'box-8'") == [("destroyed",)]
