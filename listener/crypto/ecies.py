"""ECIES for ``SubscriptionCreated.userEncrypted`` (user → server), SPEC §4::

    ephemeralPub (65 bytes, 0x04 || X || Y) || iv (12) || ciphertext || tag (16)

    key = HKDF-SHA256(ikm = ECDH shared x-coordinate (32 bytes), salt = empty,
                      info = empty, length = 32)
    AES-256-GCM, no associated data.

Sizes are bounded before any parsing.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from listener.crypto.errors import CryptoError
from listener.crypto.secp256k1 import PUBLIC_KEY_LEN, ec_private_key, load_public_key, uncompressed

IV_LEN = 12


TAG_LEN = 16


KEY_LEN = 32


#: Largest ``SubscriptionCreated.userEncrypted`` accepted (a v2 payload is ~330 bytes).
MAX_ECIES_BYTES = 4096


#: Smallest well-formed ECIES blob: header + iv + tag (empty plaintext).
MIN_ECIES_BYTES = PUBLIC_KEY_LEN + IV_LEN + TAG_LEN


#: Largest decrypted user plaintext that is parsed.
MAX_USER_PLAINTEXT_BYTES = MAX_ECIES_BYTES - MIN_ECIES_BYTES


def _ecies_key(shared_x: bytes) -> bytes:
    # salt=None is RFC 5869's "not provided", i.e. HashLen zero bytes; same as empty.
    return HKDF(algorithm=hashes.SHA256(), length=KEY_LEN, salt=None, info=b"").derive(shared_x)


def ecies_encrypt(recipient_pub: bytes, plaintext: bytes) -> bytes:
    """Encrypt ``plaintext`` to ``recipient_pub`` (the subscriber side of userEncrypted)."""
    if not isinstance(plaintext, bytes | bytearray):
        raise CryptoError("plaintext must be bytes")
    if len(plaintext) > MAX_USER_PLAINTEXT_BYTES:
        raise CryptoError(
            f"plaintext is {len(plaintext)} bytes; at most {MAX_USER_PLAINTEXT_BYTES} fit in a payload"
        )
    recipient = load_public_key(recipient_pub)
    ephemeral = ec.generate_private_key(ec.SECP256K1())
    key = _ecies_key(ephemeral.exchange(ec.ECDH(), recipient))
    iv = os.urandom(IV_LEN)
    sealed = AESGCM(key).encrypt(iv, bytes(plaintext), None)
    return uncompressed(ephemeral.public_key()) + iv + sealed


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
    ephemeral_pub = blob[:PUBLIC_KEY_LEN]
    if ephemeral_pub[0] != 4:
        raise CryptoError("encrypted payload does not start with an uncompressed public key (0x04)")
    server = ec_private_key(private_key)
    ephemeral = load_public_key(ephemeral_pub)
    key = _ecies_key(server.exchange(ec.ECDH(), ephemeral))
    iv = blob[PUBLIC_KEY_LEN : PUBLIC_KEY_LEN + IV_LEN]
    try:
        return AESGCM(key).decrypt(iv, blob[PUBLIC_KEY_LEN + IV_LEN :], None)
    except InvalidTag:
        raise CryptoError(
            "encrypted payload failed authentication (wrong server key or corrupted data)"
        ) from None
