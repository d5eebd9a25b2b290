"""SPEC §4 against an independent implementation: a Node signup page built from npm's
@noble/curves + @noble/hashes + @noble/ciphers (ECIES, 12-byte IV) and ethers
(personal_sign). Node encrypts, Python decrypts and verifies, and both directions of the NFT
AES-GCM payload are checked. The decoders are then fuzzed with truncations, bit flips and
oversized versions of these genuine vectors: nothing but CryptoError may come out."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from listener.crypto.credentials import (
    ConnectionDetails,
    decrypt_connection_details,
    encrypt_connection_details,
)
from listener.crypto.ecies import MAX_ECIES_BYTES
from listener.crypto.errors import CryptoError
from listener.crypto.secp256k1 import public_key_from_private
from listener.crypto.user_secret import decrypt_user_encrypted
from tests.support.paths import REPO_ROOT

SCRIPT = Path(__file__).resolve().parent / "interop" / "vectors.mjs"
SERVER_KEY = bytes.fromhex("5f" * 31 + "01")
DEFAULT_SECRET = "blockhost-access"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(
    NODE is None or not (REPO_ROOT / "node_modules" / "@noble" / "curves").is_dir()
    or not (REPO_ROOT / "node_modules" / "ethers").is_dir(),
    reason="node or the pinned npm crypto packages are missing; run `npm ci`")


def node(request: dict[str, Any]) -> dict[str, Any]:
    """One request to the Node side; secrets go through stdin/stdout, never argv."""
    assert NODE is not None
    done = subprocess.run([NODE, str(SCRIPT)], input=json.dumps(request), capture_output=True,
                          text=True, timeout=60, cwd=REPO_ROOT, check=False)
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


@pytest.fixture(scope="module")
def signup() -> dict[str, Any]:
    pub = public_key_from_private(SERVER_KEY)
    return node({"mode": "signup", "serverPublicKey": pub.hex(), "legacySecret": DEFAULT_SECRET})


def test_python_decrypts_and_verifies_a_node_v2_signup(signup: dict[str, Any]) -> None:
    secret = decrypt_user_encrypted(SERVER_KEY, bytes.fromhex(signup["v2"]),
                                    subscriber=signup["address"],
                                    public_secret_default=DEFAULT_SECRET)
    assert secret.form == "v2"
    assert secret.public_secret == signup["publicSecret"]
    assert "0x" + secret.signature.hex() == signup["signature"]
    with pytest.raises(CryptoError, match="subscriber"):
        decrypt_user_encrypted(SERVER_KEY, bytes.fromhex(signup["v2"]),
                               subscriber="0x" + "11" * 20,
                               public_secret_default=DEFAULT_SECRET)


def test_python_decrypts_and_verifies_a_node_legacy_signup(signup: dict[str, Any]) -> None:
    secret = decrypt_user_encrypted(SERVER_KEY, bytes.fromhex(signup["legacy"]),
                                    subscriber=signup["address"],
                                    public_secret_default=DEFAULT_SECRET)
    assert secret.form == "legacy" and secret.public_secret == DEFAULT_SECRET
    assert "0x" + secret.signature.hex() == signup["legacySignature"]
    with pytest.raises(CryptoError):  # another default: the signature no longer recovers
        decrypt_user_encrypted(SERVER_KEY, bytes.fromhex(signup["legacy"]),
                               subscriber=signup["address"], public_secret_default="other")


def test_node_decrypts_the_nft_payload_python_wrote(signup: dict[str, Any]) -> None:
    secret = decrypt_user_encrypted(SERVER_KEY, bytes.fromhex(signup["v2"]),
                                    subscriber=signup["address"],
                                    public_secret_default=DEFAULT_SECRET)
    details = ConnectionDetails(hostname="2001:db8::7", port=22, username="admin")
    blob = encrypt_connection_details(secret.signature, details)
    answer = node({"mode": "nft-decrypt", "walletKey": signup["walletKey"],
                   "publicSecret": signup["publicSecret"], "blob": blob.hex()})
    assert answer["plaintext"] == '{"hostname":"2001:db8::7","port":22,"username":"admin"}'


def test_python_decrypts_the_nft_payload_node_wrote(signup: dict[str, Any]) -> None:
    details = {"hostname": "10.0.0.9", "port": 2222, "username": "alice"}
    answer = node({"mode": "nft-encrypt", "walletKey": signup["walletKey"],
                   "publicSecret": signup["publicSecret"], "details": details})
    signature = bytes.fromhex(signup["signature"][2:])
    assert decrypt_connection_details(signature, bytes.fromhex(answer["blob"])) == \
        ConnectionDetails(**details)
    with pytest.raises(CryptoError):
        decrypt_connection_details(bytes.fromhex(signup["legacySignature"][2:]),
                                   bytes.fromhex(answer["blob"]))


def _mutate(blob: bytes, data: st.DataObject) -> bytes:
    how = data.draw(st.sampled_from(["truncate", "flip", "extend", "oversize", "splice"]))
    if how == "truncate":
        return blob[:data.draw(st.integers(0, len(blob) - 1))]
    if how == "flip":
        index = data.draw(st.integers(0, len(blob) - 1))
        bit = 1 << data.draw(st.integers(0, 7))
        return blob[:index] + bytes([blob[index] ^ bit]) + blob[index + 1:]
    if how == "extend":
        return blob + data.draw(st.binary(min_size=1, max_size=64))
    if how == "oversize":
        return blob + b"\x00" * (MAX_ECIES_BYTES + 1)
    cut = data.draw(st.integers(0, len(blob)))
    return blob[:cut] + data.draw(st.binary(max_size=80))


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_fuzzed_signups_raise_only_crypto_error(signup: dict[str, Any],
                                                data: st.DataObject) -> None:
    original = bytes.fromhex(data.draw(st.sampled_from([signup["v2"], signup["legacy"]])))
    mutated = _mutate(original, data)
    if mutated == original:
        return
    with pytest.raises(CryptoError):
        decrypt_user_encrypted(SERVER_KEY, mutated, subscriber=signup["address"],
                               public_secret_default=DEFAULT_SECRET)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_fuzzed_nft_payloads_raise_only_crypto_error(signup: dict[str, Any],
                                                     data: st.DataObject) -> None:
    signature = bytes.fromhex(signup["signature"][2:])
    original = encrypt_connection_details(
        signature, ConnectionDetails(hostname="10.0.0.1", port=22, username="admin"))
    mutated = _mutate(original, data)
    if mutated == original:
        return
    with pytest.raises(CryptoError):
        decrypt_connection_details(signature, mutated)
