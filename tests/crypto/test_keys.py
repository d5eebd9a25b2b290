"""Server key files: created 0600 whatever the umask, loaded strictly, never echoed."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account

from listener.crypto import key_files as keys
from listener.crypto.secp256k1 import SECP256K1_N
from listener.errors import UserError

KNOWN_KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")


@pytest.fixture
def umask_zero() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def _assert_no_key_in(error: BaseException, *secrets: bytes) -> None:
    text = f"{error} {error!r}".lower()
    for secret in secrets:
        assert secret.hex() not in text
        assert secret.hex()[:16] not in text
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


def test_generate_is_0600_with_umask_zero(tmp_path: Path, umask_zero: None) -> None:
    path = tmp_path / "server.key"
    key = keys.generate_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == key.hex() + "\n"
    assert keys.load_private_key(path) == key


def test_generate_refuses_to_overwrite(tmp_path: Path) -> None:
    path = _write(tmp_path / "server.key", KNOWN_KEY.hex().encode())
    with pytest.raises(UserError, match="already exists; refusing to overwrite") as info:
        keys.generate_key_file(path)
    assert path.read_bytes() == KNOWN_KEY.hex().encode()
    _assert_no_key_in(info.value, KNOWN_KEY)


def test_generate_refuses_a_dangling_symlink(tmp_path: Path) -> None:
    link = tmp_path / "server.key"
    link.symlink_to(tmp_path / "elsewhere.key")
    with pytest.raises(UserError, match="already exists"):
        keys.generate_key_file(link)
    assert not (tmp_path / "elsewhere.key").exists()


def test_generate_overwrite_replaces_atomically(tmp_path: Path, umask_zero: None) -> None:
    path = _write(tmp_path / "server.key", KNOWN_KEY.hex().encode(), 0o644)
    key = keys.generate_key_file(path, overwrite=True)
    assert key != KNOWN_KEY
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keys.load_private_key(path) == key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["server.key"]


def test_generate_in_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        keys.generate_key_file(tmp_path / "nope" / "server.key")


def test_generated_keys_differ(tmp_path: Path) -> None:
    assert keys.generate_key_file(tmp_path / "a") != keys.generate_key_file(tmp_path / "b")


@pytest.mark.parametrize(
    "content",
    [
        KNOWN_KEY.hex(),
        KNOWN_KEY.hex() + "\n",
        "0x" + KNOWN_KEY.hex() + "\n",
        "0X" + KNOWN_KEY.hex().upper() + "\r\n",
        "  " + KNOWN_KEY.hex() + "  \n\n",
    ],
)
def test_load_accepts_hex_forms(tmp_path: Path, content: str) -> None:
    path = _write(tmp_path / "server.key", content.encode())
    assert keys.load_private_key(path) == KNOWN_KEY


def test_load_rejects_group_readable(tmp_path: Path) -> None:
    path = _write(tmp_path / "server.key", KNOWN_KEY.hex().encode(), 0o644)
    with pytest.raises(UserError) as info:
        keys.load_private_key(path)
    message = str(info.value)
    assert "0644" in message
    assert f"chmod 600 {path}" in message
    _assert_no_key_in(info.value, KNOWN_KEY)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o601, 0o620])
def test_load_rejects_any_group_or_other_bit(tmp_path: Path, mode: int) -> None:
    path = _write(tmp_path / "server.key", KNOWN_KEY.hex().encode(), mode)
    with pytest.raises(UserError, match="chmod 600"):
        keys.load_private_key(path)


def test_load_accepts_0400(tmp_path: Path) -> None:
    path = _write(tmp_path / "server.key", KNOWN_KEY.hex().encode(), 0o400)
    assert keys.load_private_key(path) == KNOWN_KEY


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "server.key"
    with pytest.raises(UserError) as info:
        keys.load_private_key(path)
    assert str(info.value) == (
        f"server key file {path} not found: create it with `blockhost keys generate --out {path}`"
    )


def test_load_uses_what(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^signer key file .* not found"):
        keys.load_private_key(tmp_path / "x", what="signer key")


def test_load_rejects_directory(tmp_path: Path) -> None:
    directory = tmp_path / "server.key"
    directory.mkdir(mode=0o700)
    with pytest.raises(UserError, match="not a regular file"):
        keys.load_private_key(directory)


def test_load_follows_symlink_to_private_file(tmp_path: Path) -> None:
    target = _write(tmp_path / "real.key", KNOWN_KEY.hex().encode())
    link = tmp_path / "server.key"
    link.symlink_to(target)
    assert keys.load_private_key(link) == KNOWN_KEY


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\n",
        b"not a key",
        KNOWN_KEY.hex().encode()[:-1],
        KNOWN_KEY.hex().encode() + b"00",
        KNOWN_KEY.hex().encode().replace(b"4", b"g", 1),
        b"0x" + KNOWN_KEY.hex().encode() + b" trailing",
        KNOWN_KEY.hex().encode() + b"\n" + KNOWN_KEY.hex().encode(),
        KNOWN_KEY,  # raw bytes, not hex
        b"\xff\xfe" + KNOWN_KEY.hex().encode(),
        b"0" * 100_000,
        b"-----BEGIN EC PRIVATE KEY-----\n" + KNOWN_KEY.hex().encode() + b"\n-----END EC PRIVATE KEY-----\n",
    ],
)
def test_load_rejects_garbage_without_echoing(tmp_path: Path, content: bytes) -> None:
    path = _write(tmp_path / "server.key", content)
    with pytest.raises(UserError, match="does not hold a secp256k1 private key") as info:
        keys.load_private_key(path)
    _assert_no_key_in(info.value, KNOWN_KEY)
    assert "not a key" not in str(info.value)


@pytest.mark.parametrize("value", [0, SECP256K1_N, SECP256K1_N + 1, 2**256 - 1])
def test_load_rejects_out_of_range(tmp_path: Path, value: int) -> None:
    raw = value.to_bytes(32, "big")
    path = _write(tmp_path / "server.key", raw.hex().encode())
    with pytest.raises(UserError, match="outside the secp256k1 key range") as info:
        keys.load_private_key(path)
    if value:
        _assert_no_key_in(info.value, raw)


def test_public_key_and_address() -> None:
    account = Account.from_key(KNOWN_KEY)
    assert keys.address_of(KNOWN_KEY) == account.address
    pub = keys.public_key_hex(KNOWN_KEY)
    assert pub.startswith("0x04") and len(pub) == 2 + 130
    from eth_keys import keys as eth_keys

    assert bytes.fromhex(pub[4:]) == eth_keys.PrivateKey(KNOWN_KEY).public_key.to_bytes()
    with pytest.raises(ValueError):
        keys.address_of(b"\x00" * 32)
