"""Wire formats that protect the subscriber's secret and the VM's connection details.

Two payloads travel on chain (SPEC §4):

``SubscriptionCreated.userEncrypted`` (user → server), ECIES over secp256k1::

    ephemeralPub (65 bytes, 0x04 || X || Y) || iv (12) || ciphertext || tag (16)

    key = HKDF-SHA256(ikm = ECDH shared x-coordinate (32 bytes), salt = empty,
                      info = empty, length = 32)
    AES-256-GCM, no associated data.

  The plaintext is either the v2 JSON object
  ``{"signature": "0x<130 hex>", "publicSecret": "libpam-web3:<address>:<nonce>"}``
  or, for the legacy signup page, the bare ``0x<130 hex>`` signature string (the
  publicSecret is then the server's configured default).  The signature is an EIP-191
  ``personal_sign`` of the publicSecret by the subscriber.

NFT ``userEncrypted`` (server → user), keyed by the user's own signature::

    nonce (12) || ciphertext || tag (16)
    key = keccak256(all 65 signature bytes), AES-256-GCM, no associated data,
    plaintext = compact JSON {"hostname": ..., "port": 22, "username": ...}

Every decoder here raises :class:`CryptoError` and nothing else for bad input, with a
message that never contains key, signature or plaintext bytes.  Input sizes are bounded
before any parsing.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_keys import keys as eth_keys
from eth_utils import keccak, to_checksum_address

from listener.errors import BlockhostError

__all__ = [
    "CryptoError",
    "ConnectionDetails",
    "UserSecret",
    "MAX_ECIES_BYTES",
    "MAX_NFT_PAYLOAD_BYTES",
    "PUBLIC_SECRET_PREFIX",
    "SECP256K1_N",
    "build_user_plaintext",
    "decrypt_connection_details",
    "decrypt_user_encrypted",
    "ecies_decrypt",
    "ecies_encrypt",
    "encrypt_connection_details",
    "is_valid_private_key",
    "make_public_secret",
    "parse_user_plaintext",
    "public_key_from_private",
    "recover_personal_sign",
    "sign_public_secret",
    "verify_user_secret",
]

#: Order of the secp256k1 group.
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_HALF_N = SECP256K1_N // 2

_PUB_LEN = 65
_IV_LEN = 12
_TAG_LEN = 16
_KEY_LEN = 32
_SIG_LEN = 65

#: Largest ``SubscriptionCreated.userEncrypted`` accepted (a v2 payload is ~330 bytes).
MAX_ECIES_BYTES = 4096
#: Smallest well-formed ECIES blob: header + iv + tag (empty plaintext).
MIN_ECIES_BYTES = _PUB_LEN + _IV_LEN + _TAG_LEN
#: Largest decrypted user plaintext that is parsed.
MAX_USER_PLAINTEXT_BYTES = MAX_ECIES_BYTES - MIN_ECIES_BYTES
#: Largest NFT connection-details payload accepted.
MAX_NFT_PAYLOAD_BYTES = 4096

PUBLIC_SECRET_PREFIX = "libpam-web3"

_SIG_HEX_RE = re.compile(r"0x[0-9a-fA-F]{130}")
_ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")
#: The nonce part of a v2 publicSecret: URL/base64-safe characters only, so the string
#: is harmless wherever it is shown (NFT metadata, status output, logs).
_NONCE_RE = re.compile(r"[A-Za-z0-9._~+/=-]{1,128}")
_PUBLIC_SECRET_RE = re.compile(
    rf"{PUBLIC_SECRET_PREFIX}:(?P<address>0x[0-9a-fA-F]{{40}}):(?P<nonce>[A-Za-z0-9._~+/=-]{{1,128}})"
)
#: Hostnames and usernames in connection details: printable ASCII without whitespace.
_DETAIL_TEXT_RE = re.compile(r"[\x21-\x7e]+")


class CryptoError(BlockhostError):
    """A payload could not be decrypted, parsed or verified.

    The message says what was wrong with the payload; it never contains secret bytes.
    """


# --------------------------------------------------------------------------- keys


def is_valid_private_key(private_key: bytes) -> bool:
    """True for a 32-byte big-endian scalar in ``[1, n-1]``."""
    if not isinstance(private_key, bytes | bytearray) or len(private_key) != 32:
        return False
    return 0 < int.from_bytes(private_key, "big") < SECP256K1_N


def _ec_private_key(private_key: bytes) -> ec.EllipticCurvePrivateKey:
    if not is_valid_private_key(private_key):
        raise CryptoError("private key is not a valid secp256k1 key (32 bytes, 1 <= d < n)")
    return ec.derive_private_key(int.from_bytes(private_key, "big"), ec.SECP256K1())


def _uncompressed(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def public_key_from_private(private_key: bytes) -> bytes:
    """The 65-byte uncompressed public key ``0x04 || X || Y`` of a private key."""
    return _uncompressed(_ec_private_key(private_key).public_key())


def _load_public_key(public_key: bytes) -> ec.EllipticCurvePublicKey:
    """Accept 65-byte uncompressed, 33-byte compressed or 64-byte raw ``X || Y``."""
    if not isinstance(public_key, bytes | bytearray):
        raise CryptoError("public key must be bytes")
    data = bytes(public_key)
    if len(data) == 64:
        data = b"\x04" + data
    if not (
        (len(data) == 65 and data[0] == 4) or (len(data) == 33 and data[0] in (2, 3))
    ):
        raise CryptoError(
            "public key must be 65 bytes (0x04...), 33 bytes (0x02/0x03...) or 64 raw bytes"
        )
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), data)
    except ValueError:
        raise CryptoError("public key is not a point on secp256k1") from None


# --------------------------------------------------------------------------- ECIES


def _ecies_key(shared_x: bytes) -> bytes:
    # salt=None is RFC 5869's "not provided", i.e. HashLen zero bytes; same as empty.
    return HKDF(algorithm=hashes.SHA256(), length=_KEY_LEN, salt=None, info=b"").derive(shared_x)


def ecies_encrypt(recipient_pub: bytes, plaintext: bytes) -> bytes:
    """Encrypt ``plaintext`` to ``recipient_pub`` (the subscriber side of userEncrypted)."""
    if not isinstance(plaintext, bytes | bytearray):
        raise CryptoError("plaintext must be bytes")
    if len(plaintext) > MAX_USER_PLAINTEXT_BYTES:
        raise CryptoError(
            f"plaintext is {len(plaintext)} bytes; at most {MAX_USER_PLAINTEXT_BYTES} fit in a payload"
        )
    recipient = _load_public_key(recipient_pub)
    ephemeral = ec.generate_private_key(ec.SECP256K1())
    key = _ecies_key(ephemeral.exchange(ec.ECDH(), recipient))
    iv = os.urandom(_IV_LEN)
    sealed = AESGCM(key).encrypt(iv, bytes(plaintext), None)
    return _uncompressed(ephemeral.public_key()) + iv + sealed


def ecies_decrypt(private_key: bytes, blob: bytes) -> bytes:
    """Decrypt a userEncrypted blob with the server's private key."""
    if not isinstance(blob, bytes | bytearray):
        raise CryptoError("encrypted payload must be bytes")
    if len(blob) > MAX_ECIES_BYTES:
        raise CryptoError(f"encrypted payload is {len(blob)} bytes; the limit is {MAX_ECIES_BYTES}")
    if len(blob) < MIN_ECIES_BYTES:
        raise CryptoError(
            f"encrypted payload is {len(blob)} bytes; at least {MIN_ECIES_BYTES} are needed"
        )
    blob = bytes(blob)
    ephemeral_pub = blob[:_PUB_LEN]
    if ephemeral_pub[0] != 4:
        raise CryptoError("encrypted payload does not start with an uncompressed public key (0x04)")
    server = _ec_private_key(private_key)
    ephemeral = _load_public_key(ephemeral_pub)
    key = _ecies_key(server.exchange(ec.ECDH(), ephemeral))
    iv = blob[_PUB_LEN : _PUB_LEN + _IV_LEN]
    try:
        return AESGCM(key).decrypt(iv, blob[_PUB_LEN + _IV_LEN :], None)
    except InvalidTag:
        raise CryptoError(
            "encrypted payload failed authentication (wrong server key or corrupted data)"
        ) from None


# --------------------------------------------------------------------------- user secret


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
        if not isinstance(self.signature, bytes) or len(self.signature) != _SIG_LEN:
            raise CryptoError(f"signature must be {_SIG_LEN} bytes")
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


def _load_json_object(text: str, what: str) -> dict[str, Any]:
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
        obj = _load_json_object(text, "v2 plaintext")
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
    if not isinstance(signature, bytes | bytearray) or len(signature) != _SIG_LEN:
        raise CryptoError(f"signature must be {_SIG_LEN} bytes")
    r = int.from_bytes(signature[0:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    v = signature[64]
    if v in (27, 28):
        v -= 27
    if v not in (0, 1):
        raise CryptoError("signature recovery id v must be 0, 1, 27 or 28")
    if not (0 < r < SECP256K1_N):
        raise CryptoError("signature r is out of range")
    if not (0 < s <= _HALF_N):
        raise CryptoError("signature s is out of range (must be low-s, EIP-2)")
    try:
        message_hash = _eip191_hash(message)
    except UnicodeEncodeError:
        raise CryptoError("message is not encodable as UTF-8") from None
    try:
        public_key = eth_keys.Signature(vrs=(v, r, s)).recover_public_key_from_msg_hash(
            message_hash
        )
    except Exception:  # eth_keys raises several types for unrecoverable points
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


# --------------------------------------------------------------------------- user side


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
    if not isinstance(signature, bytes | bytearray) or len(signature) != _SIG_LEN:
        raise CryptoError(f"signature must be {_SIG_LEN} bytes")
    parse_public_secret(public_secret)
    body = {"signature": "0x" + bytes(signature).hex(), "publicSecret": public_secret}
    return json.dumps(body, separators=(",", ":")).encode("ascii")


# --------------------------------------------------------------------------- NFT payload


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
    if not isinstance(signature, bytes | bytearray) or len(signature) != _SIG_LEN:
        raise CryptoError(f"signature must be {_SIG_LEN} bytes")
    return keccak(bytes(signature))


def encrypt_connection_details(signature: bytes, details: ConnectionDetails) -> bytes:
    """``nonce || ciphertext || tag`` under keccak256(signature)."""
    if not isinstance(details, ConnectionDetails):
        raise CryptoError("details must be ConnectionDetails")
    key = _signature_key(signature)
    nonce = os.urandom(_IV_LEN)
    return nonce + AESGCM(key).encrypt(nonce, details.to_json(), None)


def decrypt_connection_details(signature: bytes, blob: bytes) -> ConnectionDetails:
    """Inverse of :func:`encrypt_connection_details`; also reads the legacy spaced JSON."""
    if not isinstance(blob, bytes | bytearray):
        raise CryptoError("NFT payload must be bytes")
    if len(blob) > MAX_NFT_PAYLOAD_BYTES:
        raise CryptoError(f"NFT payload is {len(blob)} bytes; the limit is {MAX_NFT_PAYLOAD_BYTES}")
    if len(blob) < _IV_LEN + _TAG_LEN:
        raise CryptoError(f"NFT payload is {len(blob)} bytes; at least {_IV_LEN + _TAG_LEN} are needed")
    key = _signature_key(signature)
    blob = bytes(blob)
    try:
        plaintext = AESGCM(key).decrypt(blob[:_IV_LEN], blob[_IV_LEN:], None)
    except InvalidTag:
        raise CryptoError(
            "NFT payload failed authentication (signature of a different publicSecret or wallet?)"
        ) from None
    try:
        text = plaintext.decode("utf-8")
    except UnicodeDecodeError:
        raise CryptoError("NFT payload plaintext is not UTF-8") from None
    obj = _load_json_object(text, "NFT payload")
    if set(obj) != {"hostname", "port", "username"}:
        raise CryptoError("NFT payload must have exactly the keys hostname, port, username")
    try:
        return ConnectionDetails(hostname=obj["hostname"], port=obj["port"], username=obj["username"])
    except ValueError as exc:
        raise CryptoError(f"NFT payload is invalid: {exc}") from None
