"""The server's secp256k1 key file: generate it safely, load it strictly.

Format: the private key as 64 hex digits, optionally ``0x``-prefixed, optionally followed
by a newline (``generate_key_file`` writes bare hex and a newline).  The file must be a
regular file (a symlink to one is fine) with no group or other permission bits.

Nothing here ever puts key material into an exception message, a log line or argv.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from eth_keys.datatypes import PrivateKey

from listener.crypto.secp256k1 import is_valid_private_key, public_key_from_private
from listener.errors import UserError

__all__ = ["address_of", "generate_key_file", "load_private_key", "public_key_hex"]

#: A key file is 64 hex digits plus an optional prefix and whitespace; anything much
#: larger is certainly not a key file and is not read into memory.
_MAX_KEY_FILE_BYTES = 1024
_KEY_HEX_RE = re.compile(rb"(?:0[xX])?([0-9a-fA-F]{64})")


def _generate_private_key() -> bytes:
    while True:
        value = ec.generate_private_key(ec.SECP256K1()).private_numbers().private_value
        key = value.to_bytes(32, "big")
        if is_valid_private_key(key):  # always true; cheap belt and braces
            return key


def _write_new(path: Path, data: bytes) -> None:
    """Create ``path`` exclusively with mode 0600 regardless of umask, write, fsync."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    os.close(fd)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def generate_key_file(path: Path, *, overwrite: bool = False) -> bytes:
    """Create a new key file at ``path`` (mode 0600) and return the private key.

    Refuses to replace an existing file unless ``overwrite``; with ``overwrite`` the new
    key is written to a temporary file beside it and renamed over it atomically.
    """
    path = Path(path)
    directory = path.parent
    if not directory.is_dir():
        raise UserError(
            f"cannot create key file {path}: directory {directory} does not exist; create it first"
        )
    key = _generate_private_key()
    data = key.hex().encode("ascii") + b"\n"
    try:
        if not overwrite:
            try:
                _write_new(path, data)
            except FileExistsError:
                raise UserError(
                    f"key file {path} already exists; refusing to overwrite it "
                    "(payloads already encrypted to its public key would become unreadable). "
                    "Move it away first if you really want a new key"
                ) from None
        else:
            tmp = directory / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
            _write_new(tmp, data)
            try:
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        _fsync_dir(directory)
    except UserError:
        raise
    except OSError as exc:
        raise UserError(f"cannot create key file {path}: {exc.strerror or 'I/O error'}") from None
    return key


def read_owner_only_file(path: Path, *, what: str, missing_hint: str,
                         expected: str = "secret", max_bytes: int = 64 * 1024) -> bytes:
    """Read a secret file that only its owner may read or write; UserError with a fix otherwise.

    The mode is checked on the opened descriptor (no race between check and read)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise UserError(f"{what} file {path} not found: {missing_hint}") from None
    except PermissionError:
        raise UserError(
            f"{what} file {path} is not readable by this user (permission denied); "
            "run as the file's owner or fix its ownership"
        ) from None
    except OSError as exc:
        raise UserError(f"cannot open {what} file {path}: {exc.strerror or 'I/O error'}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UserError(f"{what} file {path} is not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise UserError(
                f"{what} file {path} has mode {mode:04o}, readable or writable by group/others; "
                f"run `chmod 600 {path}`"
            )
        chunks = []
        remaining = max_bytes + 1
        while remaining > 0:
            chunk = os.read(fd, remaining)
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        raw = b"".join(chunks)
    except OSError as exc:
        raise UserError(f"cannot read {what} file {path}: {exc.strerror or 'I/O error'}") from None
    finally:
        os.close(fd)
    if len(raw) > max_bytes:
        raise UserError(f"{what} file {path} does not hold a {expected} "
                        f"(it is larger than {max_bytes} bytes); is it the right file?")
    return raw


def load_private_key(path: Path, *, what: str = "server key") -> bytes:
    """Read and validate a hex secp256k1 key file; UserError with a fix otherwise."""
    raw = read_owner_only_file(
        path, what=what, missing_hint=f"create it with `blockhost keys generate --out {path}`",
        expected="secp256k1 private key", max_bytes=_MAX_KEY_FILE_BYTES)

    bad_format = UserError(
        f"{what} file {path} does not hold a secp256k1 private key "
        "(expected 64 hex digits, optionally 0x-prefixed)"
    )
    match = _KEY_HEX_RE.fullmatch(raw.strip(b" \t\r\n"))
    if match is None:
        raise bad_format
    key = bytes.fromhex(match.group(1).decode("ascii"))
    if not is_valid_private_key(key):
        raise UserError(
            f"{what} file {path} holds a value outside the secp256k1 key range (zero or >= n); "
            f"generate a new key with `blockhost keys generate --out <new file>`"
        )
    return key


def public_key_hex(private_key: bytes) -> str:
    """``0x04…``: the 65-byte uncompressed public key, as signup pages expect it."""
    return "0x" + public_key_from_private(private_key).hex()


def address_of(private_key: bytes) -> str:
    """Checksum Ethereum address of a private key."""
    if not is_valid_private_key(private_key):
        raise ValueError("not a valid secp256k1 private key")
    return PrivateKey(bytes(private_key)).public_key.to_checksum_address()
