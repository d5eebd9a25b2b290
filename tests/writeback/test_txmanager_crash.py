"""Crash safety of minting: a real child process is SIGKILLed at three points of a mint
(after signing, after broadcasting, after the receipt but before recording it); a restart on
the same SQLite file must end with exactly one token and the originally signed bytes.
Logs and the database are then searched for the signer key and the user's signature."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from eth_account import Account
from web3 import Web3

from listener.chain.contracts import deploy_contract
from listener.crypto.credentials import ConnectionDetails, encrypt_connection_details
from listener.crypto.user_secret import sign_public_secret
from listener.devkit.devchain import DEV_PRIVATE_KEYS, Anvil
from listener.writeback.fees import FeePolicy
from listener.writeback.nft import MintRequest, NftMinter, mint_key
from listener.writeback.tx_store import TxStore
from listener.writeback.txmanager import TxManager
from tests.support.paths import REPO_ROOT

pytestmark = pytest.mark.slow  # four child processes (~25 s on 2 shared cores)

OWNER = Account.from_key(DEV_PRIVATE_KEYS[0])
USER = Account.create()

CHILD = r'''
import json, os, signal, sys
from pathlib import Path
from eth_account import Account
from web3 import Web3
from listener.writeback.fees import FeePolicy
from listener.crypto.key_files import load_private_key
from listener.runtime.logging_setup import configure
from listener.writeback.nft import MintRequest, NftMinter
from listener.writeback.tx_store import TxStore
from listener.writeback.txmanager import TxManager

args = json.loads(sys.argv[1])
configure(sys.stderr)

class CrashingTxManager(TxManager):
    def _checkpoint(self, name):
        if name == args["crash_at"]:
            print(f"crashing at {name}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

w3 = Web3(Web3.HTTPProvider(args["url"]))
account = Account.from_key(load_private_key(Path(args["key_file"]), what="signer key"))
txm = CrashingTxManager(w3, TxStore.open(args["db"]), account,
                        fees=FeePolicy.from_gwei(100, 1), confirmations=0)
request = MintRequest(to=args["to"], user_encrypted=bytes.fromhex(args["user_encrypted"]),
                      public_secret=args["public_secret"], description="d", image_uri="",
                      animation_url_base64="", expires_at=args["expires_at"])
print(NftMinter(txm, args["nft"]).mint(args["request_key"], 1, request))
'''


def _request() -> tuple[MintRequest, bytes]:
    public_secret = f"libpam-web3:{USER.address}:crash"
    signature = sign_public_secret(USER.key, public_secret)
    blob = encrypt_connection_details(
        signature, ConnectionDetails(hostname="10.0.0.5", port=22, username="admin"))
    return MintRequest(to=USER.address, user_encrypted=blob, public_secret=public_secret,
                       description="d", image_uri="", animation_url_base64="",
                       expires_at=2_000_000_000), signature


@pytest.mark.parametrize(("crash_at", "automine"), [
    ("signed", True),      # committed, never sent
    ("broadcast", False),  # sent, still in the mempool when the process dies
    ("broadcast", True),   # sent and mined, receipt never read
    ("confirmed", True),   # receipt read at depth, not yet recorded
])
def test_sigkill_during_mint_then_restart_mints_exactly_once(anvil: Anvil, tmp_path: Path,
                                                             crash_at: str,
                                                             automine: bool) -> None:
    w3 = Web3(Web3.HTTPProvider(anvil.url, request_kwargs={"timeout": 30}))
    nft, _ = deploy_contract(w3, OWNER, "AccessCredentialNFT", "Access", "BHA", "")
    if not automine:
        w3.provider.make_request("evm_setAutomine", [False])
    key_file = tmp_path / "signer.key"
    key_file.write_text(OWNER.key.hex())
    key_file.chmod(0o600)
    db = tmp_path / "blockhost.db"
    request, signature = _request()
    args = {"url": anvil.url, "key_file": str(key_file), "db": str(db), "nft": nft,
            "crash_at": crash_at, "to": request.to, "request_key": mint_key(1),
            "user_encrypted": request.user_encrypted.hex(),
            "public_secret": request.public_secret, "expires_at": request.expires_at}
    log_path = tmp_path / "child.log"
    with open(log_path, "wb") as log:
        child = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], cwd=REPO_ROOT,
                               stdout=log, stderr=subprocess.STDOUT, timeout=60,
                               env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert child.returncode == -signal.SIGKILL, log_path.read_text()
    assert f"crashing at {crash_at}" in log_path.read_text()

    store = TxStore.open(db)
    stored = store.get(mint_key(1))
    assert stored is not None  # signed and committed before anything left the process
    signed_hash = store.attempts(stored.id)[0].tx_hash
    minter_contract = NftMinter(TxManager(w3, store, OWNER, fees=FeePolicy.from_gwei(100, 1)),
                                nft)
    supply_before = minter_contract.total_supply()
    assert supply_before == (0 if crash_at == "signed" or not automine else 1)
    if not automine:
        assert w3.eth.get_transaction(signed_hash) is not None  # waiting in the pool
        w3.provider.make_request("evm_setAutomine", [True])
        w3.provider.make_request("evm_mine", [])

    # restart: the same database, a fresh process state
    txm = TxManager(w3, store, OWNER, fees=FeePolicy.from_gwei(100, 1), receipt_timeout=10,
                    poll_interval=0.05)
    txm.resume()
    minter = NftMinter(txm, nft)
    token_id = minter.mint(mint_key(1), 1, request)
    assert token_id == 0
    assert minter.mint(mint_key(1), 1, request) == 0
    assert minter.total_supply() == 1
    final = store.get(mint_key(1))
    assert final is not None and final.state == "confirmed"
    assert final.tx_hash == signed_hash  # the bytes signed before the crash, never re-signed
    assert len(store.attempts(stored.id)) == 1
    store.conn.close()

    # no secrets in the child's log or anywhere in the database files
    needles = [OWNER.key.hex(), bytes(OWNER.key).hex(), signature.hex()]
    raw_needles = [bytes(OWNER.key), signature]
    logs = log_path.read_text().lower()
    for needle in needles:
        assert needle.removeprefix("0x").lower() not in logs
    for path in tmp_path.glob("blockhost.db*"):
        content = path.read_bytes()
        for raw in raw_needles:
            assert raw not in content
        lowered = content.lower()
        for needle in needles:
            assert needle.removeprefix("0x").lower().encode() not in lowered
