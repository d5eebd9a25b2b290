"""The subscriber's secret inside ``userEncrypted``: their EIP-191 signature over a
publicSecret, which the server verifies and later uses to seal the connection details.

The plaintext is either the v2 JSON object
``{"signature": "0x<130 hex>", "publicSecret": "libpam-web3:<address>:<nonce>"}``
or, for the legacy signup page, the bare ``0x<130 hex>`` signature string (the
publicSecret is then the server's configured default).
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_keys.datatypes import Signature
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from listener.crypto.ecies import MAX_USER_PLAINTEXT_BYTES, ecies_decrypt
from listener.crypto.errors import CryptoError
from listener.crypto.secp256k1 import HALF_N, SECP256K1_N, is_valid_private_key

SIGNATURE_LEN = 65


PUBLIC_SECRET_PREFIX = "libpam-web3"


_SIG_HEX_RE = re.compile(r"0x[0-9a-fA-F]{130}")


_ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")


#: The nonce part of a v2 publicSecret: URL/base64-safe characters only, so the string
#: is harmless wherever it is shown (NFT metadata, status output, logs).
_NONCE_RE = re.compile(r"[A-Za-z0-9._~+/=-]{1,128}")


_PUBLIC_SECRET_RE = re.compile(
    rf"{PUBLIC_SECRET_PREFIX}:(?P<address>0x[0-9a-fA-F]{{40}}):(?P<nonce>[A-Za-z0-9._~+/=-]{{1,128}})"
)


@dataclass(frozen=True)
class UserSecret:
    """The subscriber's signature over a publicSecret, as recovered from userEncrypted.

    ``repr`` and ``str`` never show the signature: it is the AES key material of the
    subscriber's NFT payload.
    """

    signature: bytes = field(repr=False)
    public_secret: str
    form: Literal["v2", "legacy"]

    def __post_init__(self) -> None:
        if not isinstance(self.signature, bytes) or len(self.signature) != SIGNATURE_LEN:
            raise CryptoError(f"signature must be {SIGNATURE_LEN} bytes")
        if not isinstance(self.public_secret, str):
            raise CryptoError("publicSecret must be a string")
        if self.form not in ("v2", "legacy"):
            raise CryptoError("form must be 'v2' or 'legacy'")

    def __repr__(self) -> str:
        return f"UserSecret(form={self.form!r}, public_secret={self.public_secret!r}, signature=<redacted>)"

    __str__ = __repr__


def _parse_signature_hex(text: Any) -> bytes:
    if not isinstance(text, str) or not _SIG_HEX_RE.fullmatch(text):
        raise CryptoError("signature must be '0x' followed by 130 hex digits")
    return bytes.fromhex(text[2:])


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise CryptoError("JSON object has a duplicate key")
        out[key] = value
    return out


def load_json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except CryptoError:
        raise
    except (ValueError, RecursionError, TypeError):
        raise CryptoError(f"{what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise CryptoError(f"{what} must be a JSON object")
    return value


def parse_public_secret(public_secret: str) -> tuple[str, str]:
    """Split a v2 publicSecret into (checksum address, nonce); CryptoError if malformed."""
    if not isinstance(public_secret, str):
        raise CryptoError("publicSecret must be a string")
    match = _PUBLIC_SECRET_RE.fullmatch(public_secret)
    if match is None:
        raise CryptoError(
            f"publicSecret must look like '{PUBLIC_SECRET_PREFIX}:<0x address>:<nonce>' "
            "(nonce: 1-128 of A-Z a-z 0-9 . _ ~ + / = -)"
        )
    return to_checksum_address(match["address"]), match["nonce"]


def parse_user_plaintext(plaintext: bytes, *, public_secret_default: str) -> UserSecret:
    """Parse a decrypted userEncrypted plaintext (v2 JSON or legacy bare signature)."""
    if not isinstance(plaintext, bytes | bytearray):
        raise CryptoError("plaintext must be bytes")
    if len(plaintext) > MAX_USER_PLAINTEXT_BYTES:
        raise CryptoError(
            f"plaintext is {len(plaintext)} bytes; the limit is {MAX_USER_PLAINTEXT_BYTES}"
        )
    try:
        text = bytes(plaintext).decode("utf-8")
    except UnicodeDecodeError:
        raise CryptoError("plaintext is not UTF-8") from None
    text = text.strip(" \t\r\n")
    if text.startswith("{"):
        obj = load_json_object(text, "v2 plaintext")
        if set(obj) != {"signature", "publicSecret"}:
            raise CryptoError("v2 plaintext must have exactly the keys 'signature' and 'publicSecret'")
        signature = _parse_signature_hex(obj["signature"])
        public_secret = obj["publicSecret"]
        parse_public_secret(public_secret)
        return UserSecret(signature=signature, public_secret=public_secret, form="v2")
    if text.startswith(("0x", "0X")):
        signature = _parse_signature_hex(text)
        if not isinstance(public_secret_default, str) or not public_secret_default:
            raise CryptoError("legacy payload needs a non-empty public_secret_default")
        return UserSecret(signature=signature, public_secret=public_secret_default, form="legacy")
    raise CryptoError(
        "plaintext is neither a v2 JSON object nor a legacy '0x'-prefixed signature"
    )


def _eip191_hash(message: str) -> bytes:
    data = message.encode("utf-8")
    return keccak(b"\x19Ethereum Signed Message:\n" + str(len(data)).encode("ascii") + data)


def recover_personal_sign(message: str, signature: bytes) -> str:
    """Checksum address that produced an EIP-191 ``personal_sign`` of ``message``.

    ``v`` may be 0/1 or 27/28. High-``s`` signatures are rejected: every wallet emits the
    low-``s`` form (EIP-2), and the signature bytes are later used as an AES key, so a
    malleated twin would produce credentials the subscriber's wallet cannot re-derive.
    """
    if not isinstance(message, str):
        raise CryptoError("message must be a string")
    if not isinstance(signature, bytes | bytearray) or len(signature) != SIGNATURE_LEN:
        raise CryptoError(f"signature must be {SIGNATURE_LEN} bytes")
    r = int.from_bytes(signature[0:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    v = signature[64]
    if v in (27, 28):
        v -= 27
    if v not in (0, 1):
        raise CryptoError("signature recovery id v must be 0, 1, 27 or 28")
    if not (0 < r < SECP256K1_N):
        raise CryptoError("signature r is out of range")
    if not (0 < s <= HALF_N):
        raise CryptoError("signature s is out of range (must be low-s, EIP-2)")
    try:
        message_hash = _eip191_hash(message)
    except UnicodeEncodeError:
        raise CryptoError("message is not encodable as UTF-8") from None
    try:
        public_key = Signature(vrs=(v, r, s)).recover_public_key_from_msg_hash(
            message_hash
        )
    except Exception:  # noqa: BLE001 - eth_keys raises several types for unrecoverable points
        raise CryptoError("signature does not recover to a public key") from None
    return public_key.to_checksum_address()


def verify_user_secret(secret: UserSecret, subscriber: str) -> None:
    """Raise CryptoError unless ``secret`` was signed by ``subscriber``.

    For v2 the publicSecret also has to name the subscriber, so a signature made for
    another wallet's credentials cannot be replayed.
    """
    if not isinstance(subscriber, str) or not _ADDRESS_RE.fullmatch(subscriber):
        raise CryptoError("subscriber must be a 0x-prefixed 20-byte hex address")
    if secret.form == "v2":
        embedded, _nonce = parse_public_secret(secret.public_secret)
        if embedded.lower() != subscriber.lower():
            raise CryptoError("publicSecret names a different address than the subscriber")
    signer = recover_personal_sign(secret.public_secret, secret.signature)
    if signer.lower() != subscriber.lower():
        raise CryptoError("signature does not recover to the subscriber")


def decrypt_user_encrypted(
    server_key: bytes, blob: bytes, *, subscriber: str, public_secret_default: str
) -> UserSecret:
    """Decrypt, parse and verify ``SubscriptionCreated.userEncrypted``."""
    plaintext = ecies_decrypt(server_key, blob)
    secret = parse_user_plaintext(plaintext, public_secret_default=public_secret_default)
    verify_user_secret(secret, subscriber)
    return secret


def make_public_secret(address: str, nonce: str | None = None) -> str:
    """``libpam-web3:<checksum address>:<nonce>``; a random 128-bit hex nonce by default."""
    if not isinstance(address, str) or not _ADDRESS_RE.fullmatch(address):
        raise CryptoError("address must be a 0x-prefixed 20-byte hex address")
    if nonce is None:
        nonce = secrets.token_hex(16)
    if not isinstance(nonce, str) or not _NONCE_RE.fullmatch(nonce):
        raise CryptoError("nonce must be 1-128 of A-Z a-z 0-9 . _ ~ + / = -")
    return f"{PUBLIC_SECRET_PREFIX}:{to_checksum_address(address)}:{nonce}"


def sign_public_secret(private_key: bytes, public_secret: str) -> bytes:
    """EIP-191 personal_sign of ``public_secret``: 65 bytes ``r || s || v`` with v in {27, 28}."""
    if not is_valid_private_key(private_key):
        raise CryptoError("private key is not a valid secp256k1 key (32 bytes, 1 <= d < n)")
    if not isinstance(public_secret, str):
        raise CryptoError("publicSecret must be a string")
    signed = Account.sign_message(encode_defunct(text=public_secret), private_key=bytes(private_key))
    return bytes(signed.signature)


def build_user_plaintext(signature: bytes, public_secret: str) -> bytes:
    """The v2 plaintext (compact JSON) the subscriber encrypts to the server."""
    if not isinstance(signature, bytes | bytearray) or len(signature) != SIGNATURE_LEN:
        raise CryptoError(f"signature must be {SIGNATURE_LEN} bytes")
    parse_public_secret(public_secret)
    body = {"signature": "0x" + bytes(signature).hex(), "publicSecret": public_secret}
    return json.dumps(body, separators=(",", ":")).encode("ascii")
