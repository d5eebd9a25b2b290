"""listener.crypto against independent implementations and hostile input.

The independent path used here shares no code with listener.crypto: secp256k1 point
arithmetic in plain Python, HKDF from hmac/hashlib, AES-GCM and keccak from pycryptodome
(installed with eth-account), and, where node is on PATH, node's own crypto module.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import subprocess

import pytest
from Crypto.Cipher import AES
from Crypto.Hash import keccak as pycryptodome_keccak
from eth_account import Account
from eth_account.messages import encode_defunct
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from listener.crypto.credentials import (
    MAX_NFT_PAYLOAD_BYTES,
    ConnectionDetails,
    decrypt_connection_details,
    encrypt_connection_details,
)
from listener.crypto.ecies import MAX_ECIES_BYTES, MAX_USER_PLAINTEXT_BYTES, ecies_decrypt, ecies_encrypt
from listener.crypto.errors import CryptoError
from listener.crypto.secp256k1 import public_key_from_private
from listener.crypto.user_secret import (
    UserSecret,
    build_user_plaintext,
    decrypt_user_encrypted,
    make_public_secret,
    parse_user_plaintext,
    recover_personal_sign,
    sign_public_secret,
)

# ---------------------------------------------------------------- independent secp256k1

P = 2**256 - 2**32 - 977
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
G = (
    0x79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798,
    0x483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8,
)


def _add(a, b):
    if a is None:
        return b
    if b is None:
        return a
    if a[0] == b[0] and (a[1] + b[1]) % P == 0:
        return None
    if a == b:
        slope = 3 * a[0] * a[0] * pow(2 * a[1], -1, P) % P
    else:
        slope = (b[1] - a[1]) * pow(b[0] - a[0], -1, P) % P
    x = (slope * slope - a[0] - b[0]) % P
    return (x, (slope * (a[0] - x) - a[1]) % P)


def _mul(k, point):
    result = None
    while k:
        if k & 1:
            result = _add(result, point)
        point = _add(point, point)
        k >>= 1
    return result


def _encode(point) -> bytes:
    return b"\x04" + point[0].to_bytes(32, "big") + point[1].to_bytes(32, "big")


def _decode(data: bytes):
    assert len(data) == 65 and data[0] == 4
    return (int.from_bytes(data[1:33], "big"), int.from_bytes(data[33:], "big"))


def _hkdf_sha256_empty(ikm: bytes) -> bytes:
    prk = hmac.new(b"\x00" * 32, ikm, hashlib.sha256).digest()  # empty salt = HashLen zeros
    return hmac.new(prk, b"\x01", hashlib.sha256).digest()  # T(1) with empty info; L = 32


def independent_ecies_encrypt(recipient_pub: bytes, plaintext: bytes, ephemeral: int, iv: bytes) -> bytes:
    shared = _mul(ephemeral, _decode(recipient_pub))
    key = _hkdf_sha256_empty(shared[0].to_bytes(32, "big"))
    cipher = AES.new(key, AES.MODE_GCM, nonce=iv)
    ciphertext, tag = cipher.encrypt_and_digest(plaintext)
    return _encode(_mul(ephemeral, G)) + iv + ciphertext + tag


def independent_ecies_decrypt(private_key: int, blob: bytes) -> bytes:
    shared = _mul(private_key, _decode(blob[:65]))
    key = _hkdf_sha256_empty(shared[0].to_bytes(32, "big"))
    cipher = AES.new(key, AES.MODE_GCM, nonce=blob[65:77])
    return cipher.decrypt_and_verify(blob[77:-16], blob[-16:])


def independent_nft_decrypt(signature: bytes, blob: bytes) -> bytes:
    key = pycryptodome_keccak.new(digest_bits=256, data=signature).digest()
    cipher = AES.new(key, AES.MODE_GCM, nonce=blob[:12])
    return cipher.decrypt_and_verify(blob[12:-16], blob[-16:])


def independent_nft_encrypt(signature: bytes, plaintext: bytes, nonce: bytes) -> bytes:
    key = pycryptodome_keccak.new(digest_bits=256, data=signature).digest()
    ciphertext, tag = AES.new(key, AES.MODE_GCM, nonce=nonce).encrypt_and_digest(plaintext)
    return nonce + ciphertext + tag


# ---------------------------------------------------------------- fixtures

SERVER = Account.from_key(hashlib.sha256(b"blockhost test server").digest())
USER = Account.from_key(hashlib.sha256(b"blockhost test user").digest())
OTHER = Account.from_key(hashlib.sha256(b"blockhost test other").digest())
SERVER_KEY = bytes(SERVER.key)
USER_KEY = bytes(USER.key)

# Known-answer vector, computed once by the independent path above (fixed keys and iv).
KAT_RECIPIENT_KEY = bytes.fromhex("a512fb0e6d85384cd58743a267f0d98da0b92089dee07f101c5ad2c259c27a97")
KAT_RECIPIENT_PUB = bytes.fromhex(
    "049c7080673d264243cb2cc090ace80e69ce5fb84e9b391be8477e5722dfbf4093"
    "e05df401a6480e96674599c5110b1e9227453b2a043fba1f47717d7f31851658"
)
KAT_AES_KEY = bytes.fromhex("23222ad54dde107791c7d51c77d6b431509aeab5c350381012382f4dc2a258d8")
KAT_BLOB = bytes.fromhex(
    "04472f3937fcc22a2e362603d122974edc1beccd95ff880bdee8b57d15b70aa17b"
    "c447a24dddbe4b0294bf57625dbfd8fb16a2e9c37381aba1606cd4d4df142da9"
    "000102030405060708090a0b"
    "f45143c04959f057418ea2abdac1a7a463507f59180c061bacf17e96a3230704"
    "eeb56e4775c27f6dd10f7965316abcc8"
)
KAT_PLAINTEXT = b"blockhost known-answer plaintext"


def _user_signature(message: str, account=USER) -> bytes:
    return bytes(account.sign_message(encode_defunct(text=message)).signature)


# ---------------------------------------------------------------- ECIES


def test_known_answer_vector_decrypts() -> None:
    assert public_key_from_private(KAT_RECIPIENT_KEY) == KAT_RECIPIENT_PUB
    assert ecies_decrypt(KAT_RECIPIENT_KEY, KAT_BLOB) == KAT_PLAINTEXT


def test_known_answer_vector_matches_independent_path() -> None:
    d = int.from_bytes(KAT_RECIPIENT_KEY, "big")
    assert _encode(_mul(d, G)) == KAT_RECIPIENT_PUB
    shared = _mul(d, _decode(KAT_BLOB[:65]))
    assert _hkdf_sha256_empty(shared[0].to_bytes(32, "big")) == KAT_AES_KEY
    assert independent_ecies_decrypt(d, KAT_BLOB) == KAT_PLAINTEXT


def test_hand_computed_hkdf_matches_rfc5869_case_3() -> None:
    # RFC 5869 test case 3: SHA-256, IKM = 22 x 0x0b, empty salt and info, L = 42.
    ikm = b"\x0b" * 22
    prk = hmac.new(b"\x00" * 32, ikm, hashlib.sha256).digest()
    assert prk.hex() == "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04"
    t1 = hmac.new(prk, b"\x01", hashlib.sha256).digest()
    t2 = hmac.new(prk, t1 + b"\x02", hashlib.sha256).digest()
    assert (t1 + t2)[:42].hex() == (
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
        "9d201395faa4b61a96c8"
    )


@pytest.mark.parametrize("ephemeral", [1, 2, N - 1, 0xC0FFEE,
                                       int.from_bytes(os.urandom(32), "big") % (N - 1) + 1])
def test_decrypts_independent_encryption(ephemeral: int) -> None:
    pub = public_key_from_private(SERVER_KEY)
    blob = independent_ecies_encrypt(pub, b"hello \x00 world", ephemeral, os.urandom(12))
    assert ecies_decrypt(SERVER_KEY, blob) == b"hello \x00 world"


def test_independent_path_decrypts_our_encryption() -> None:
    pub = public_key_from_private(SERVER_KEY)
    for plaintext in (b"", b"x", os.urandom(500)):
        blob = ecies_encrypt(pub, plaintext)
        assert len(blob) == 65 + 12 + len(plaintext) + 16
        assert independent_ecies_decrypt(int.from_bytes(SERVER_KEY, "big"), blob) == plaintext


def test_public_key_forms_accepted() -> None:
    pub65 = public_key_from_private(SERVER_KEY)
    x, y = _decode(pub65)
    compressed = bytes([2 + (y & 1)]) + x.to_bytes(32, "big")
    assert pub65 == _encode(_mul(int.from_bytes(SERVER_KEY, "big"), G))
    for pub in (pub65, pub65[1:], compressed):
        blob = ecies_encrypt(pub, b"form")
        assert ecies_decrypt(SERVER_KEY, blob) == b"form"


@pytest.mark.parametrize(
    "pub",
    [b"", b"\x04" + b"\x01" * 64, b"\x05" + b"\x00" * 64, b"\x02" + b"\xff" * 32, b"\x04" * 10],
)
def test_bad_public_keys_rejected(pub: bytes) -> None:
    with pytest.raises(CryptoError):
        ecies_encrypt(pub, b"x")


def test_wrong_key_and_tampering_rejected() -> None:
    pub = public_key_from_private(SERVER_KEY)
    blob = ecies_encrypt(pub, b"secret")
    with pytest.raises(CryptoError, match="authentication"):
        ecies_decrypt(USER_KEY, blob)
    for index in (0 + 70, 65, 80, len(blob) - 1):
        tampered = bytearray(blob)
        tampered[index] ^= 1
        with pytest.raises(CryptoError):
            ecies_decrypt(SERVER_KEY, bytes(tampered))
    with pytest.raises(CryptoError):
        ecies_decrypt(SERVER_KEY, blob[:92])
    with pytest.raises(CryptoError, match="limit"):
        ecies_decrypt(SERVER_KEY, blob + b"\x00" * MAX_ECIES_BYTES)
    with pytest.raises(CryptoError):
        ecies_decrypt(b"\x00" * 32, blob)


NODE_SCRIPT = r"""
const c = require('crypto');
const [mode, a, b] = process.argv.slice(1);
if (mode === 'encrypt') {            // a = recipient pub hex, b = plaintext hex
  const e = c.createECDH('secp256k1'); e.generateKeys();
  const shared = e.computeSecret(Buffer.from(a, 'hex'));
  const key = Buffer.from(c.hkdfSync('sha256', shared, Buffer.alloc(0), Buffer.alloc(0), 32));
  const iv = c.randomBytes(12);
  const ci = c.createCipheriv('aes-256-gcm', key, iv);
  const ct = Buffer.concat([ci.update(Buffer.from(b, 'hex')), ci.final()]);
  process.stdout.write(Buffer.concat([e.getPublicKey(), iv, ct, ci.getAuthTag()]).toString('hex'));
} else {                             // a = private key hex, b = blob hex
  const blob = Buffer.from(b, 'hex');
  const e = c.createECDH('secp256k1'); e.setPrivateKey(Buffer.from(a, 'hex'));
  const shared = e.computeSecret(blob.subarray(0, 65));
  const key = Buffer.from(c.hkdfSync('sha256', shared, Buffer.alloc(0), Buffer.alloc(0), 32));
  const d = c.createDecipheriv('aes-256-gcm', key, blob.subarray(65, 77));
  d.setAuthTag(blob.subarray(blob.length - 16));
  const pt = Buffer.concat([d.update(blob.subarray(77, blob.length - 16)), d.final()]);
  process.stdout.write(pt.toString('hex'));
}
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not on PATH")
def test_interoperates_with_node_crypto() -> None:
    """The signup page encrypts in JavaScript: check both directions against node."""
    pub = public_key_from_private(SERVER_KEY)
    plaintext = build_user_plaintext(
        _user_signature("libpam-web3:x:1"), make_public_secret(USER.address, "1")
    )
    out = subprocess.run(
        ["node", "-e", NODE_SCRIPT, "encrypt", pub.hex(), plaintext.hex()],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout
    assert ecies_decrypt(SERVER_KEY, bytes.fromhex(out)) == plaintext
    blob = ecies_encrypt(pub, plaintext)
    out = subprocess.run(
        ["node", "-e", NODE_SCRIPT, "decrypt", SERVER_KEY.hex(), blob.hex()],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout
    assert bytes.fromhex(out) == plaintext


# ---------------------------------------------------------------- signatures


def test_recover_matches_eth_account_for_every_v_encoding() -> None:
    message = make_public_secret(USER.address)
    signature = _user_signature(message)
    assert signature[64] in (27, 28)
    assert recover_personal_sign(message, signature) == USER.address
    assert recover_personal_sign(message, signature[:64] + bytes([signature[64] - 27])) == USER.address
    bad_v = signature[:64] + bytes([29])
    with pytest.raises(CryptoError, match="recovery id"):
        recover_personal_sign(message, bad_v)


def test_recover_unicode_message_matches_eth_account() -> None:
    message = "blockhost-access ✓ ünïcode"
    assert recover_personal_sign(message, _user_signature(message)) == USER.address


def test_high_s_twin_rejected() -> None:
    message = "blockhost-access"
    signature = _user_signature(message)
    s = int.from_bytes(signature[32:64], "big")
    twin = signature[:32] + (N - s).to_bytes(32, "big") + bytes([55 - signature[64]])
    assert Account.recover_message(encode_defunct(text=message), signature=twin) == USER.address
    with pytest.raises(CryptoError, match="low-s"):
        recover_personal_sign(message, twin)


def test_sign_public_secret_is_personal_sign() -> None:
    message = make_public_secret(USER.address, "abc")
    assert sign_public_secret(USER_KEY, message) == _user_signature(message)


def test_make_public_secret() -> None:
    ps = make_public_secret(USER.address.lower(), "n-1")
    assert ps == f"libpam-web3:{USER.address}:n-1"
    random_one = make_public_secret(USER.address)
    assert random_one.startswith(f"libpam-web3:{USER.address}:") and len(random_one.split(":")[2]) == 32
    assert make_public_secret(USER.address) != random_one
    for bad_nonce in ("", "a b", "x:y", "é", "a" * 129):
        with pytest.raises(CryptoError):
            make_public_secret(USER.address, bad_nonce)
    with pytest.raises(CryptoError):
        make_public_secret("0x1234", "n")


# ---------------------------------------------------------------- user plaintext


def _encrypt_v2(account=USER, named=None, nonce="n0") -> tuple[bytes, str, bytes]:
    public_secret = make_public_secret((named or account).address, nonce)
    signature = _user_signature(public_secret, account)
    plaintext = build_user_plaintext(signature, public_secret)
    return ecies_encrypt(public_key_from_private(SERVER_KEY), plaintext), public_secret, signature


def test_v2_round_trip() -> None:
    blob, public_secret, signature = _encrypt_v2()
    secret = decrypt_user_encrypted(
        SERVER_KEY, blob, subscriber=USER.address.lower(), public_secret_default="unused"
    )
    assert secret == UserSecret(signature=signature, public_secret=public_secret, form="v2")


def test_v2_plaintext_is_compact_json() -> None:
    public_secret = make_public_secret(USER.address, "n")
    signature = _user_signature(public_secret)
    plaintext = build_user_plaintext(signature, public_secret)
    assert plaintext == json.dumps(
        {"signature": "0x" + signature.hex(), "publicSecret": public_secret}, separators=(",", ":")
    ).encode()


def test_legacy_round_trip() -> None:
    signature = _user_signature("blockhost-access")
    plaintext = ("0x" + signature.hex()).encode()
    blob = independent_ecies_encrypt(public_key_from_private(SERVER_KEY), plaintext, 12345, os.urandom(12))
    secret = decrypt_user_encrypted(
        SERVER_KEY, blob, subscriber=USER.address, public_secret_default="blockhost-access"
    )
    assert secret.form == "legacy"
    assert secret.public_secret == "blockhost-access"
    assert secret.signature == signature
    # Whitespace around the legacy string (a trailing newline from a script) is tolerated.
    parsed = parse_user_plaintext(plaintext + b"\n", public_secret_default="blockhost-access")
    assert parsed.signature == signature


def test_wrong_subscriber_rejected() -> None:
    blob, _, _ = _encrypt_v2()
    with pytest.raises(CryptoError, match="publicSecret names a different address"):
        decrypt_user_encrypted(SERVER_KEY, blob, subscriber=OTHER.address, public_secret_default="x")
    signature = _user_signature("blockhost-access")
    legacy = ecies_encrypt(
        public_key_from_private(SERVER_KEY), ("0x" + signature.hex()).encode()
    )
    with pytest.raises(CryptoError, match="signature does not recover to the subscriber"):
        decrypt_user_encrypted(
            SERVER_KEY, legacy, subscriber=OTHER.address, public_secret_default="blockhost-access"
        )


def test_v2_address_mismatch_rejected_even_when_signature_is_the_subscribers() -> None:
    # USER signs a publicSecret that names OTHER: the signature is USER's, the name is not.
    blob, _, _ = _encrypt_v2(account=USER, named=OTHER)
    with pytest.raises(CryptoError, match="different address"):
        decrypt_user_encrypted(SERVER_KEY, blob, subscriber=USER.address, public_secret_default="x")


def test_v2_signed_by_someone_else_rejected() -> None:
    # OTHER signs a publicSecret naming USER and submits it for USER.
    blob, _, _ = _encrypt_v2(account=OTHER, named=USER)
    with pytest.raises(CryptoError, match="signature does not recover to the subscriber"):
        decrypt_user_encrypted(SERVER_KEY, blob, subscriber=USER.address, public_secret_default="x")


@pytest.mark.parametrize(
    "plaintext",
    [
        b"",
        b"0x1234",
        b"0x" + b"zz" * 65,
        b"0X" + b"ab" * 65,
        b"ab" * 65,
        b"\xff\xfe",
        b"{}",
        b"[]",
        b'{"signature": "0x' + b"ab" * 65 + b'"}',
        b'{"signature": "0x' + b"ab" * 65 + b'", "publicSecret": 5}',
        b'{"signature": "0x' + b"ab" * 65 + b'", "publicSecret": "blockhost-access"}',
        b'{"signature": "0x' + b"ab" * 65 + b'", "publicSecret": "libpam-web3:0xab:1"}',
        b'{"signature": "0x' + b"ab" * 65 + b'", "publicSecret": "libpam-web3:0x' + b"ab" * 20
        + b':1", "extra": 1}',
        b'{"signature": "0x' + b"ab" * 65 + b'", "signature": "0x' + b"ab" * 65
        + b'", "publicSecret": "libpam-web3:0x' + b"ab" * 20 + b':1"}',
        b"[" * 3000,
        b'{"a":' * 1500,
        b"x" * 5000,
    ],
)
def test_malformed_plaintexts_rejected(plaintext: bytes) -> None:
    with pytest.raises(CryptoError):
        parse_user_plaintext(plaintext, public_secret_default="blockhost-access")


def test_legacy_needs_a_default() -> None:
    with pytest.raises(CryptoError, match="public_secret_default"):
        parse_user_plaintext(b"0x" + b"ab" * 65, public_secret_default="")


def test_user_secret_repr_hides_signature() -> None:
    _, public_secret, signature = _encrypt_v2()
    secret = UserSecret(signature=signature, public_secret=public_secret, form="v2")
    for text in (repr(secret), str(secret), f"{secret}", repr([secret])):
        assert signature.hex() not in text.lower()
        assert signature.hex()[:16] not in text.lower()
        assert "redacted" in text


def test_error_messages_never_contain_secrets() -> None:
    blob, _, signature = _encrypt_v2()
    errors = []
    for call in (
        lambda: decrypt_user_encrypted(SERVER_KEY, blob, subscriber=OTHER.address, public_secret_default="x"),
        lambda: ecies_decrypt(USER_KEY, blob),
        lambda: parse_user_plaintext(b"0x" + signature.hex().encode() + b"00", public_secret_default="x"),
        lambda: decrypt_connection_details(signature, blob),
    ):
        with pytest.raises(CryptoError) as info:
            call()
        errors.append(info.value)
    for error in errors:
        text = str(error).lower() + repr(error).lower()
        for secret in (signature.hex(), SERVER_KEY.hex(), USER_KEY.hex()):
            assert secret not in text and secret[:20] not in text
        assert error.__cause__ is None
        assert error.__context__ is None or error.__suppress_context__


# ---------------------------------------------------------------- NFT payload

DETAILS = ConnectionDetails(hostname="2001:db8::7", port=22, username="admin")


def test_nft_payload_round_trip_and_layout() -> None:
    signature = _user_signature(make_public_secret(USER.address, "n"))
    blob = encrypt_connection_details(signature, DETAILS)
    assert decrypt_connection_details(signature, blob) == DETAILS
    assert independent_nft_decrypt(signature, blob) == \
        b'{"hostname":"2001:db8::7","port":22,"username":"admin"}'
    assert len(blob) == 12 + len(DETAILS.to_json()) + 16
    assert blob[:12] != encrypt_connection_details(signature, DETAILS)[:12]  # fresh nonce


@pytest.mark.parametrize(
    "plaintext",
    [
        b'{"hostname": "10.0.0.5", "port": 22, "username": "admin"}',  # legacy json.dumps spacing
        b'{"hostname":"10.0.0.5","port":22,"username":"admin"}',  # JSON.stringify
        b' {"username":"admin","port":22,"hostname":"10.0.0.5"}\n',
    ],
)
def test_nft_payload_reads_independent_encryptions(plaintext: bytes) -> None:
    signature = _user_signature("blockhost-access")
    blob = independent_nft_encrypt(signature, plaintext, os.urandom(12))
    assert decrypt_connection_details(signature, blob) == ConnectionDetails("10.0.0.5", 22, "admin")


@pytest.mark.parametrize(
    "plaintext",
    [
        b"",
        b"null",
        b"[]",
        b'{"hostname":"h","port":22}',
        b'{"hostname":"h","port":"22","username":"u"}',
        b'{"hostname":"h","port":true,"username":"u"}',
        b'{"hostname":"h","port":70000,"username":"u"}',
        b'{"hostname":"h","port":22.0,"username":"u"}',
        b'{"hostname":"","port":22,"username":"u"}',
        b'{"hostname":"a b","port":22,"username":"u"}',
        b'{"hostname":"h\\n","port":22,"username":"u"}',
        b'{"hostname":"h","port":22,"username":"u","x":1}',
        b'{"hostname":"h","hostname":"i","port":22,"username":"u"}',
        b'{"hostname":"h","port":NaN,"username":"u"}',
        b"\xff",
        b"[" * 2000,
    ],
)
def test_nft_payload_bad_plaintexts_rejected(plaintext: bytes) -> None:
    signature = _user_signature("blockhost-access")
    blob = independent_nft_encrypt(signature, plaintext, os.urandom(12))
    with pytest.raises(CryptoError):
        decrypt_connection_details(signature, blob)


def test_nft_payload_wrong_signature_and_sizes() -> None:
    signature = _user_signature("blockhost-access")
    blob = encrypt_connection_details(signature, DETAILS)
    with pytest.raises(CryptoError, match="authentication"):
        decrypt_connection_details(_user_signature("blockhost-access", OTHER), blob)
    with pytest.raises(CryptoError):
        decrypt_connection_details(signature[:64], blob)
    with pytest.raises(CryptoError):
        decrypt_connection_details(signature, blob[:27])
    with pytest.raises(CryptoError, match="limit"):
        decrypt_connection_details(signature, blob + b"\x00" * MAX_NFT_PAYLOAD_BYTES)


def test_connection_details_validation() -> None:
    for kwargs in (
        {"hostname": "h", "port": 0, "username": "u"},
        {"hostname": "h", "port": True, "username": "u"},
        {"hostname": "h\n", "port": 22, "username": "u"},
        {"hostname": "h", "port": 22, "username": ""},
    ):
        with pytest.raises(ValueError):
            ConnectionDetails(**kwargs)


# ---------------------------------------------------------------- fuzzing

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SIG = _user_signature("blockhost-access")
SERVER_PUB = public_key_from_private(SERVER_KEY)
EPHEMERAL_HEADER = ecies_encrypt(SERVER_PUB, b"")[:65]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (st.lists(children, max_size=4)
                      | st.dictionaries(st.text(max_size=12), children, max_size=4)),
    max_leaves=20,
)
plaintexts = st.one_of(
    st.binary(max_size=600),
    st.text(max_size=300).map(str.encode),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(
        st.sampled_from(["signature", "publicSecret", "hostname", "port", "username", "x"]),
        json_values, max_size=4,
    ).map(lambda v: json.dumps(v).encode()),
    st.text(alphabet="0123456789abcdefxX", max_size=140).map(lambda s: ("0x" + s).encode()),
)


@FUZZ
@given(blob=st.one_of(
    st.binary(max_size=MAX_ECIES_BYTES + 200),
    st.binary(max_size=300).map(lambda tail: EPHEMERAL_HEADER + tail),
    st.binary(min_size=64, max_size=200).map(lambda tail: b"\x04" + tail),
    st.integers(MAX_ECIES_BYTES + 1, MAX_ECIES_BYTES + 5000).map(lambda n: b"\x04" * n),
))
def test_fuzz_ecies_decrypt_raises_only_crypto_error(blob: bytes) -> None:
    with pytest.raises(CryptoError):
        ecies_decrypt(SERVER_KEY, blob)


@FUZZ
@given(plaintext=plaintexts)
def test_fuzz_user_plaintext_raises_only_crypto_error(plaintext: bytes) -> None:
    try:
        secret = parse_user_plaintext(plaintext, public_secret_default="blockhost-access")
    except CryptoError:
        return
    assert len(secret.signature) == 65


@FUZZ
@given(plaintext=plaintexts)
def test_fuzz_full_user_path_raises_only_crypto_error(plaintext: bytes) -> None:
    if len(plaintext) > MAX_USER_PLAINTEXT_BYTES:
        plaintext = plaintext[: MAX_USER_PLAINTEXT_BYTES]
    blob = ecies_encrypt(SERVER_PUB, plaintext)
    with pytest.raises(CryptoError):
        decrypt_user_encrypted(SERVER_KEY, blob, subscriber=USER.address, public_secret_default="x")


@FUZZ
@given(blob=st.one_of(
    st.binary(max_size=MAX_NFT_PAYLOAD_BYTES + 200),
    plaintexts.map(lambda p: independent_nft_encrypt(SIG, p, b"\x07" * 12)),
), signature=st.one_of(st.just(SIG), st.binary(max_size=80)))
def test_fuzz_connection_details_raises_only_crypto_error(blob: bytes, signature: bytes) -> None:
    try:
        details = decrypt_connection_details(signature, blob)
    except CryptoError:
        return
    assert isinstance(details, ConnectionDetails)
