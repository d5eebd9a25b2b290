"""`blockhost contracts deploy` stores the default credentials page; `contracts set-page`
replaces it or turns it off, each part exactly once, through the transaction manager (anvil,
SQLite); a crash between parts (SIGKILL of the real command) resumes without a duplicate."""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import yaml
from eth_account import Account
from eth_utils.address import to_checksum_address
from web3 import Web3
from web3.contract import Contract
from web3.types import RPCEndpoint

from listener.chain.contracts import deploy_all, load_abi
from listener.chain.journal import Store
from listener.cli.main import main
from listener.config import load_config
from listener.devkit.devchain import DEV_PRIVATE_KEYS, Anvil
from listener.errors import UserError
from listener.ops.contracts import (
    CHUNK_CHARS,
    PAGE_BUDGET_BYTES,
    deploy_contracts,
    packaged_page,
    page_chunks,
    page_key,
    send_page,
)
from listener.runtime.wiring import build_minter
from listener.writeback.tx_store import TxStore
from tests.support.crashes import sigkill_when
from tests.support.paths import REPO_ROOT

OWNER, ALICE = (Account.from_key(k) for k in DEV_PRIVATE_KEYS[:2])
HTML = b"<!doctype html><title>credentials</title><p>decrypt in place</p>"
#: 20 KiB of HTML: four parts of at most CHUNK_CHARS base64 characters.
BIG_HTML = b"<!doctype html><p>" + bytes(range(32, 127)) * 215 + b"</p>"


class Crash(Exception):
    """Stands for the process dying between two durable steps."""


def _key_file(path: Path) -> Path:
    path.write_text(bytes(OWNER.key).hex())
    path.chmod(0o600)
    return path


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _nft(w3: Web3, address: str) -> Contract:
    return w3.eth.contract(address=to_checksum_address(address),
                           abi=load_abi("AccessCredentialNFT"))


def _page_file(tmp_path: Path, html: bytes = HTML, name: str = "page.html") -> Path:
    path = tmp_path / name
    path.write_bytes(html)
    return path


def _config(tmp_path: Path, anvil: Anvil, nft: str) -> Path:
    path = tmp_path / "blockhost.yaml"
    path.write_text(yaml.safe_dump({
        "chain": {"rpc_urls": [anvil.url], "nft_contract": nft, "confirmations": 0},
        "signer": {"private_key_file": str(_key_file(tmp_path / "signer.key"))},
        "db": {"path": str(tmp_path / "blockhost.db")},
    }))
    return path


def _page_requests(tmp_path: Path) -> list[Any]:
    store = TxStore.open(tmp_path / "blockhost.db")
    try:
        return [r for r in store.requests() if r.kind == "nftpage"]
    finally:
        store.conn.close()


def test_deploy_stores_the_packaged_page_unless_told_not_to(
        anvil: Anvil, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    key = str(_key_file(tmp_path / "deployer.key"))
    code, out, err = _cli(capsys, "contracts", "deploy", "--rpc-url", anvil.url,
                          "--private-key-file", key, "--json")
    assert code == 0, err
    doc = json.loads(out)
    packaged = packaged_page()
    expected = packaged.read_bytes() if packaged is not None else b""
    assert doc["default_page_bytes"] == len(expected)
    assert _nft(w3, doc["nft"]).functions.defaultAnimationPage().call() == \
        base64.b64encode(expected).decode()
    code, out, err = _cli(capsys, "contracts", "deploy", "--rpc-url", anvil.url,
                          "--private-key-file", key, "--no-default-page", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["default_page_bytes"] == 0
    assert _nft(w3, doc["nft"]).functions.defaultAnimationPage().call() == ""


def test_deploy_with_a_page_and_refusal_of_an_oversized_one(anvil: Anvil, tmp_path: Path) -> None:
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    key = _key_file(tmp_path / "deployer.key")
    doc = deploy_contracts(anvil.url, key, stablecoin=None, page=_page_file(tmp_path))
    assert doc["default_page_bytes"] == len(HTML)
    assert _nft(w3, doc["nft"]).functions.defaultAnimationPage().call() == \
        base64.b64encode(HTML).decode()
    head = w3.eth.block_number
    too_big = _page_file(tmp_path, b"x" * (PAGE_BUDGET_BYTES + 1), "big.html")
    with pytest.raises(UserError, match=f"over the {PAGE_BUDGET_BYTES}-byte budget"):
        deploy_contracts(anvil.url, key, stablecoin=None, page=too_big)
    assert w3.eth.block_number == head  # refused before deploying anything


def test_set_page_once_off_and_back(anvil: Anvil, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    deployment = deploy_all(w3, DEV_PRIVATE_KEYS[0], initial_plan=None)
    nft = _nft(w3, deployment.nft)
    config = str(_config(tmp_path, anvil, deployment.nft))
    page = str(_page_file(tmp_path))
    code, out, err = _cli(capsys, "--config", config, "contracts", "set-page", "--file", page,
                          "--json")
    assert code == 0, err
    assert json.loads(out) == {"nft": deployment.nft, "page_bytes": len(HTML), "changed": True,
                               "page_sha256": hashlib.sha256(HTML).hexdigest(),
                               "transactions": 1}
    assert nft.functions.defaultAnimationPage().call() == base64.b64encode(HTML).decode()
    code, out, err = _cli(capsys, "--config", config, "contracts", "set-page", "--file", page,
                          "--json")
    assert (code, json.loads(out)["changed"]) == (0, False), err
    assert len(_page_requests(tmp_path)) == 1  # the rerun sent nothing

    code, out, err = _cli(capsys, "--config", config, "contracts", "set-page", "--off")
    assert code == 0, err
    assert "changed: True" in out and "page_bytes: 0" in out
    assert nft.functions.defaultAnimationPage().call() == ""
    # Back to the first page: its first key is spent, a new generation is sent.
    code, out, err = _cli(capsys, "--config", config, "contracts", "set-page", "--file", page,
                          "--json")
    assert (code, json.loads(out)["changed"]) == (0, True), err
    assert nft.functions.defaultAnimationPage().call() == base64.b64encode(HTML).decode()
    page_b64 = base64.b64encode(HTML).decode()
    assert [r.idempotency_key for r in _page_requests(tmp_path)] == [
        page_key(deployment.nft, page_b64, 0), page_key(deployment.nft, "", 0),
        page_key(deployment.nft, page_b64, 1)]


def test_set_page_refusals_are_one_line(anvil: Anvil, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    deployment = deploy_all(w3, DEV_PRIVATE_KEYS[0], initial_plan=None)
    config = str(_config(tmp_path, anvil, deployment.nft))
    too_big = str(_page_file(tmp_path, b"x" * (PAGE_BUDGET_BYTES + 1)))
    for flags, needle in ((["--file", too_big], f"over the {PAGE_BUDGET_BYTES}-byte budget"),
                          (["--file", str(tmp_path / "missing.html")], "does not exist"),
                          (["--file", str(_page_file(tmp_path, b"", "empty.html"))], "--off")):
        code, out, err = _cli(capsys, "--config", config, "contracts", "set-page", *flags)
        assert (code, out) == (1, ""), err
        assert needle in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as usage:
        main(["--config", config, "contracts", "set-page", "--file", too_big, "--off"])
    assert usage.value.code == 2
    # Not the owner: refused at estimation, nothing stored.
    other = deploy_all(w3, DEV_PRIVATE_KEYS[1], initial_plan=None)
    config = str(_config(tmp_path, anvil, other.nft))
    code, _out, err = _cli(capsys, "--config", config, "contracts", "set-page", "--off")
    assert code == 0, err  # already off: nothing to send
    code, _out, err = _cli(capsys, "--config", config, "contracts", "set-page", "--file",
                           str(_page_file(tmp_path)))
    assert code == 1 and "OwnableUnauthorizedAccount" in err, err
    assert _page_requests(tmp_path) == []


def test_a_rerun_after_a_crash_follows_the_stored_transaction(
        anvil: Anvil, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    deployment = deploy_all(w3, DEV_PRIVATE_KEYS[0], initial_plan=None)
    config_path = _config(tmp_path, anvil, deployment.nft)
    page_b64 = base64.b64encode(HTML).decode()
    store = Store.open(tmp_path / "blockhost.db")
    try:
        minter = build_minter(load_config(config_path), store)
        assert minter is not None

        def crash_after_signing(name: str) -> None:
            if name == "signed":
                raise Crash(name)

        minter.txm._checkpoint = crash_after_signing  # type: ignore[method-assign]  # the crash hook
        with pytest.raises(Crash):
            send_page(minter, page_b64)
    finally:
        store.close()
    nonce = w3.eth.get_transaction_count(OWNER.address)
    assert _nft(w3, deployment.nft).functions.defaultAnimationPage().call() == ""
    code, out, err = _cli(capsys, "--config", str(config_path), "contracts", "set-page",
                          "--file", str(_page_file(tmp_path)), "--json")
    assert (code, json.loads(out)["changed"]) == (0, True), err
    assert _nft(w3, deployment.nft).functions.defaultAnimationPage().call() == page_b64
    (request,) = _page_requests(tmp_path)
    assert request.state == "confirmed" and request.nonce == nonce
    assert w3.eth.get_transaction_count(OWNER.address) == nonce + 1


def test_mints_without_a_signing_page_show_the_default(
        anvil: Anvil, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """nft.signing_page_path unset: `blockhost mint` passes an empty page, the default shows."""
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    deployment = deploy_all(w3, DEV_PRIVATE_KEYS[0], initial_plan=None)
    config = str(_config(tmp_path, anvil, deployment.nft))
    assert load_config(Path(config)).nft.signing_page_path is None
    code, _out, err = _cli(capsys, "--config", config, "contracts", "set-page", "--file",
                           str(_page_file(tmp_path)))
    assert code == 0, err
    code, out, err = _cli(capsys, "--config", config, "mint", "--owner-wallet", ALICE.address,
                          "--machine-id", "blockhost-001")
    assert code == 0, err
    token_id = int(out)
    uri = _nft(w3, deployment.nft).functions.tokenURI(token_id).call()
    meta = json.loads(base64.b64decode(uri.removeprefix("data:application/json;base64,")))
    assert meta["animation_url"] == (
        "data:text/html;base64," + base64.b64encode(HTML).decode()
        + f"#token={token_id}&nft={deployment.nft.lower()}&chain={w3.eth.chain_id}")


def _rpc(w3: Web3, method: str, *params: Any) -> Any:
    return w3.provider.make_request(RPCEndpoint(method), list(params))["result"]


def _stored_states(db: Path) -> dict[str, str]:
    """Key -> state of the page requests, read the way an operator would (another process)."""
    if not db.exists():
        return {}
    with closing(sqlite3.connect(db, timeout=5)) as conn:
        try:
            rows = conn.execute("SELECT idempotency_key, state FROM tx_requests WHERE kind = ?",
                                ("nftpage",)).fetchall()
        except sqlite3.OperationalError:  # the schema is not created yet
            return {}
    return {str(key): str(state) for key, state in rows}


def test_a_page_larger_than_one_transaction_is_sent_in_parts(
        anvil: Anvil, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    deployment = deploy_all(w3, DEV_PRIVATE_KEYS[0], initial_plan=None)
    config = str(_config(tmp_path, anvil, deployment.nft))
    page_b64 = base64.b64encode(BIG_HTML).decode()
    chunks = page_chunks(page_b64)
    assert len(chunks) == 4 and all(len(c) == CHUNK_CHARS for c in chunks[:-1])
    nonce = w3.eth.get_transaction_count(OWNER.address)
    code, out, err = _cli(capsys, "--config", config, "contracts", "set-page", "--file",
                          str(_page_file(tmp_path, BIG_HTML)), "--json")
    assert code == 0, err
    assert json.loads(out)["transactions"] == 4
    nft = _nft(w3, deployment.nft)
    assert nft.functions.defaultAnimationPage().call() == page_b64
    assert nft.functions.defaultAnimationPageChunks().call() == 4
    assert [r.idempotency_key for r in _page_requests(tmp_path)] == [
        page_key(deployment.nft, page_b64, 0, i) for i in range(4)]
    assert w3.eth.get_transaction_count(OWNER.address) == nonce + 4


def test_sigkill_between_parts_resumes_without_a_duplicate(
        anvil: Anvil, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The real command is killed once part 0 is confirmed and part 1 is stored (blocks are
    mined by hand, so it stops there); the rerun follows part 1 and sends only parts 2 and 3."""
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    deployment = deploy_all(w3, DEV_PRIVATE_KEYS[0], initial_plan=None)
    config = _config(tmp_path, anvil, deployment.nft)
    page_file = _page_file(tmp_path, BIG_HTML)
    page_b64 = base64.b64encode(BIG_HTML).decode()
    keys = [page_key(deployment.nft, page_b64, 0, i) for i in range(4)]
    db = tmp_path / "blockhost.db"
    nonce = w3.eth.get_transaction_count(OWNER.address)
    _rpc(w3, "evm_setAutomine", False)
    proc = subprocess.Popen(
        [sys.executable, "-m", "listener.cli", "--config", str(config), "contracts", "set-page",
         "--file", str(page_file)], cwd=REPO_ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT)

    def part_one_stored() -> bool:
        states = _stored_states(db)
        if keys[1] in states:
            return True
        if states.get(keys[0]) == "pending":
            _rpc(w3, "evm_mine")
        return False

    try:
        sigkill_when(proc, part_one_stored, what="part 1 being stored", timeout=120,
                     output=lambda: proc.stdout.read().decode() if proc.stdout else "")
    finally:
        _rpc(w3, "evm_setAutomine", True)
        if proc.stdout is not None:
            proc.stdout.close()
    before = _stored_states(db)
    assert before[keys[0]] == "confirmed" and keys[1] in before
    assert keys[2] not in before and keys[3] not in before
    code, out, err = _cli(capsys, "--config", str(config), "contracts", "set-page", "--file",
                          str(page_file), "--json")
    assert code == 0, err
    assert json.loads(out) == {"nft": deployment.nft, "page_bytes": len(BIG_HTML),
                               "page_sha256": hashlib.sha256(BIG_HTML).hexdigest(),
                               "changed": True, "transactions": 3}
    assert _nft(w3, deployment.nft).functions.defaultAnimationPage().call() == page_b64
    requests = _page_requests(tmp_path)
    assert [r.idempotency_key for r in requests] == keys
    assert {r.state for r in requests} == {"confirmed"}
    assert sorted(r.nonce for r in requests) == list(range(nonce, nonce + 4))
    assert w3.eth.get_transaction_count(OWNER.address) == nonce + 4  # no part sent twice


def test_a_resumed_upload_restarts_when_another_page_was_set_meanwhile(
        anvil: Anvil, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    deployment = deploy_all(w3, DEV_PRIVATE_KEYS[0], initial_plan=None)
    config_path = _config(tmp_path, anvil, deployment.nft)
    page_b64 = base64.b64encode(BIG_HTML).decode()
    store = Store.open(tmp_path / "blockhost.db")
    try:
        minter = build_minter(load_config(config_path), store)
        assert minter is not None
        confirmed = []

        def crash_after_two_parts(name: str) -> None:
            if name == "confirmed":
                confirmed.append(name)
                if len(confirmed) == 2:
                    raise Crash(name)  # part 1 mined, not yet recorded; part 2 never stored

        minter.txm._checkpoint = crash_after_two_parts  # type: ignore[method-assign]  # the crash hook
        with pytest.raises(Crash):
            send_page(minter, page_b64)
    finally:
        store.close()
    nft = _nft(w3, deployment.nft)
    assert nft.functions.defaultAnimationPage().call() == "".join(page_chunks(page_b64)[:2])
    code, _out, err = _cli(capsys, "--config", str(config_path), "contracts", "set-page",
                           "--file", str(_page_file(tmp_path)))
    assert code == 0, err
    code, out, err = _cli(capsys, "--config", str(config_path), "contracts", "set-page",
                          "--file", str(_page_file(tmp_path, BIG_HTML, "big.html")), "--json")
    assert code == 0, err
    # Generation 0's parts 0-1 would now extend the small page: generation 1 starts over.
    assert json.loads(out)["transactions"] == 5
    assert nft.functions.defaultAnimationPage().call() == page_b64
    keys = [r.idempotency_key for r in _page_requests(tmp_path)]
    assert keys[:2] == [page_key(deployment.nft, page_b64, 0, i) for i in range(2)]
    assert keys[-4:] == [page_key(deployment.nft, page_b64, 1, i) for i in range(4)]
