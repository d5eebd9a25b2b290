"""secp256k1 keys: validity, the uncompressed public key, and loading a peer's key."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from listener.crypto.errors import CryptoError

#: Order of the secp256k1 group.
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


HALF_N = SECP256K1_N // 2


PUBLIC_KEY_LEN = 65


def is_valid_private_key(private_key: bytes) -> bool:
    """True for a 32-byte big-endian scalar in ``[1, n-1]``."""
    if not isinstance(private_key, bytes | bytearray) or len(private_key) != 32:
        return False
    return 0 < int.from_bytes(private_key, "big") < SECP256K1_N


def ec_private_key(private_key: bytes) -> ec.EllipticCurvePrivateKey:
    if not is_valid_private_key(private_key):
        raise CryptoError("private key is not a valid secp256k1 key (32 bytes, 1 <= d < n)")
    return ec.derive_private_key(int.from_bytes(private_key, "big"), ec.SECP256K1())


def uncompressed(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def public_key_from_private(private_key: bytes) -> bytes:
    """The 65-byte uncompressed public key ``0x04 || X || Y`` of a private key."""
    return uncompressed(ec_private_key(private_key).public_key())


def load_public_key(public_key: bytes) -> ec.EllipticCurvePublicKey:
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
