"""``blockhost keys``: the server's secp256k1 key, whose public half signup pages encrypt to."""

from __future__ import annotations

from pathlib import Path

from listener.config import Config
from listener.crypto.key_files import generate_key_file, load_private_key, public_key_hex


def generate_server_key(path: Path) -> str:
    """Write a new key file (mode 0600) at ``path``; returns its public key ``0x04…``."""
    return public_key_hex(generate_key_file(path))


def server_public_key(config: Config) -> str:
    """The public key (``0x04…``) of ``server_key_file``."""
    return public_key_hex(load_private_key(config.server_key_file, what="server key"))
