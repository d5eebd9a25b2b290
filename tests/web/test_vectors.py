"""Shared vectors both ways: the pages' crypto code (web/src/crypto.js, run under node) and
listener.crypto read each other's bytes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from listener.crypto.credentials import ConnectionDetails, encrypt_connection_details
from listener.crypto.ecies import ecies_decrypt
from listener.crypto.key_files import public_key_hex
from listener.crypto.user_secret import (
    decrypt_user_encrypted,
    parse_public_secret,
    sign_public_secret,
)
from listener.devkit.devchain import DEV_PRIVATE_KEYS
from tests.support.paths import REPO_ROOT

VECTORS = Path(__file__).with_name("vectors.mjs")
SERVER_KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
USER_KEY = bytes.fromhex(DEV_PRIVATE_KEYS[1].removeprefix("0x"))
USER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def _run(request: dict[str, Any]) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI") == "true":
            pytest.fail("node is not on PATH; CI must run the pages' crypto vectors")
        pytest.skip("node is not on PATH")
    result = subprocess.run([node, str(VECTORS)], input=json.dumps(request), cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def test_page_payload_decrypts_and_verifies_in_python() -> None:
    made = _run({"op": "payload", "address": USER, "signature": "0x" + "00" * 65})
    address, nonce = parse_public_secret(made["publicSecret"])
    assert address == USER and len(nonce) == 32
    signature = sign_public_secret(USER_KEY, made["publicSecret"])
    plaintext = _run({"op": "payload", "address": USER, "signature": "0x" + signature.hex(),
                      "publicSecret": made["publicSecret"]})
    # the page's JSON for the same (signature, publicSecret) is byte-identical to Python's
    body = json.dumps({"signature": "0x" + signature.hex(), "publicSecret": made["publicSecret"]},
                      separators=(",", ":")).encode()
    assert bytes.fromhex(plaintext["plaintextHex"][2:]) == body
    blob = _run({"op": "encrypt", "publicKey": public_key_hex(SERVER_KEY),
                 "plaintextHex": plaintext["plaintextHex"]})["blob"]
    raw = bytes.fromhex(blob[2:])
    assert raw[0] == 4 and len(raw) == 65 + 12 + len(body) + 16
    assert ecies_decrypt(SERVER_KEY, raw) == body
    secret = decrypt_user_encrypted(SERVER_KEY, raw, subscriber=USER, public_secret_default="x")
    assert secret.form == "v2" and secret.public_secret == plaintext["publicSecret"]
    assert secret.signature == signature


def test_page_rejects_a_tampered_server_key() -> None:
    node = shutil.which("node") or pytest.skip("node is not on PATH")
    bad = {"op": "encrypt", "publicKey": "0x05" + "11" * 64, "plaintextHex": "0x00"}
    result = subprocess.run([node, str(VECTORS)], input=json.dumps(bad), cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0 and "65-byte 0x04" in result.stderr


def test_python_credentials_decrypt_in_page_code() -> None:
    secret = "libpam-web3:" + USER + ":0123abcd"
    signature = sign_public_secret(USER_KEY, secret)
    details = ConnectionDetails(hostname="10.0.0.7", port=2222, username="alice")
    blob = encrypt_connection_details(signature, details)
    shown = _run({"op": "decrypt", "signature": "0x" + signature.hex(), "blobHex": "0x" + blob.hex()})
    assert shown == {"hostname": "10.0.0.7", "port": 2222, "username": "alice"}
    other = sign_public_secret(USER_KEY, secret + "0")
    node = shutil.which("node") or pytest.skip("node is not on PATH")
    result = subprocess.run(
        [node, str(VECTORS)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
        check=False, input=json.dumps({"op": "decrypt", "signature": "0x" + other.hex(),
                                       "blobHex": "0x" + blob.hex()}))
    assert result.returncode != 0 and "did not decrypt" in result.stderr
