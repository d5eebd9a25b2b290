"""The one error every crypto decoder raises for bad input (never with key, signature or
plaintext bytes in its message)."""

from __future__ import annotations

from listener.errors import BlockhostError


class CryptoError(BlockhostError):
    """A payload could not be decrypted, parsed or verified.

    The message says what was wrong with the payload; it never contains secret bytes.
    """
