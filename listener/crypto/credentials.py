"""NFT ``userEncrypted`` (server → user), keyed by the user's own signature::

    nonce (12) || ciphertext || tag (16)
    key = keccak256(all 65 signature bytes), AES-256-GCM, no associated data,
    plaintext = compact JSON {"hostname": ..., "port": 22, "username": ...}
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eth_utils.crypto import keccak

from listener.crypto.ecies import IV_LEN, TAG_LEN
from listener.crypto.errors import CryptoError
from listener.crypto.user_secret import SIGNATURE_LEN, load_json_object

#: Largest NFT connection-details payload accepted.
MAX_NFT_PAYLOAD_BYTES = 4096


#: Hostnames and usernames in connection details: printable ASCII without whitespace.
_DETAIL_TEXT_RE = re.compile(r"[\x21-\x7e]+")


@dataclass(frozen=True)
class ConnectionDetails:
    """What the NFT tells its owner: where to SSH and as whom."""

    hostname: str
    port: int
    username: str

    def __post_init__(self) -> None:
        if (
            not isinstance(self.hostname, str)
            or len(self.hostname) > 255
            or not _DETAIL_TEXT_RE.fullmatch(self.hostname)
        ):
            raise ValueError("hostname must be 1-255 printable ASCII characters without spaces")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise ValueError("port must be an integer from 1 to 65535")
        if (
            not isinstance(self.username, str)
            or len(self.username) > 64
            or not _DETAIL_TEXT_RE.fullmatch(self.username)
        ):
            raise ValueError("username must be 1-64 printable ASCII characters without spaces")

    def to_json(self) -> bytes:
        """Compact JSON with keys in the order hostname, port, username."""
        body = {"hostname": self.hostname, "port": self.port, "username": self.username}
        return json.dumps(body, separators=(",", ":")).encode("ascii")


def _signature_key(signature: bytes) -> bytes:
    if not isinstance(signature, bytes | bytearray) or len(signature) != SIGNATURE_LEN:
        raise CryptoError(f"signature must be {SIGNATURE_LEN} bytes")
    return keccak(bytes(signature))


def encrypt_connection_details(signature: bytes, details: ConnectionDetails) -> bytes:
    """``nonce || ciphertext || tag`` under keccak256(signature)."""
    if not isinstance(details, ConnectionDetails):
        raise CryptoError("details must be ConnectionDetails")
    key = _signature_key(signature)
    nonce = os.urandom(IV_LEN)
    return nonce + AESGCM(key).encrypt(nonce, details.to_json(), None)


def decrypt_connection_details(signature: bytes, blob: bytes) -> ConnectionDetails:
    """Inverse of :func:`encrypt_connection_details`; also reads the legacy spaced JSON."""
    if not isinstance(blob, bytes | bytearray):
        raise CryptoError("NFT payload must be bytes")
    if len(blob) > MAX_NFT_PAYLOAD_BYTES:
        raise CryptoError(f"NFT payload is {len(blob)} bytes; the limit is {MAX_NFT_PAYLOAD_BYTES}")
    if len(blob) < IV_LEN + TAG_LEN:
        raise CryptoError(f"NFT payload is {len(blob)} bytes; at least {IV_LEN + TAG_LEN} are needed")
    key = _signature_key(signature)
    blob = bytes(blob)
    try:
        plaintext = AESGCM(key).decrypt(blob[:IV_LEN], blob[IV_LEN:], None)
    except InvalidTag:
        raise CryptoError(
            "NFT payload failed authentication (signature of a different publicSecret or wallet?)"
        ) from None
    try:
        text = plaintext.decode("utf-8")
    except UnicodeDecodeError:
        raise CryptoError("NFT payload plaintext is not UTF-8") from None
    obj = load_json_object(text, "NFT payload")
    if set(obj) != {"hostname", "port", "username"}:
        raise CryptoError("NFT payload must have exactly the keys hostname, port, username")
    try:
        return ConnectionDetails(hostname=obj["hostname"], port=obj["port"], username=obj["username"])
    except ValueError as exc:
        raise CryptoError(f"NFT payload is invalid: {exc}") from None
