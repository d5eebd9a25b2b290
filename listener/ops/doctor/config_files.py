"""The configuration and the secret files it names: valid, 0600, owned by whoever runs us."""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

from listener.config import DEFAULT_CONFIG_PATH, Config, load_config
from listener.crypto.key_files import load_private_key
from listener.ops.doctor.check import Check, describe, failed, guarded, passed
from listener.runtime.wiring import read_secret_file


def load_checked_config(path: Path | None) -> tuple[Config | None, Check]:
    """The configuration and its check (None and a failed check when it does not load)."""
    try:
        config = load_config(path)
    except Exception as exc:  # noqa: BLE001 - ConfigError and any surprise become the verdict
        return None, failed("config", describe(exc),
                            "fix the key named above (every key: PROJECT.yaml config_keys)")
    where = path or os.environ.get("BLOCKHOST_CONFIG") or DEFAULT_CONFIG_PATH
    return config, passed("config", f"{where}: valid")


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _mode_and_owner(name: str, path: Path) -> Check | None:
    """A failed check when ``path`` is missing, not a file, open to others or not ours."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return failed(name, f"{path} does not exist", "create it (mode 0600) or fix the "
                      "config key that names it")
    if not stat.S_ISREG(info.st_mode):
        return failed(name, f"{path} is not a regular file", "point the config at the file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        return failed(name, f"{path} has mode {mode:04o}: group or others may read it",
                      f"chmod 600 {path}")
    if info.st_uid != os.geteuid():
        return failed(name, f"{path} belongs to {_user_name(info.st_uid)}, blockhost runs as "
                      f"{_user_name(os.geteuid())}", f"chown {_user_name(os.geteuid())} {path}")
    return None


def secret_file_check(name: str, path: Path, *, key: bool) -> Check:
    """Mode, owner, then content: a secp256k1 key (``key``) or a non-empty secret."""

    def run() -> Check:
        problem = _mode_and_owner(name, path)
        if problem is not None:
            return problem
        if key:
            load_private_key(path, what=name)
        else:
            read_secret_file(path, name)
        return passed(name, f"{path}: mode 0600, owner {_user_name(os.geteuid())}")

    return guarded(name, f"fix {path} (see the reason)", run)


def secret_file_checks(config: Config) -> list[Check]:
    """The signer key (when the NFT is minted), the server key and the PVE token secret."""
    checks = []
    if config.chain.nft_contract:
        checks.append(secret_file_check("signer key", config.signer.private_key_file, key=True))
    checks.append(secret_file_check("server key", config.server_key_file, key=True))
    checks.append(secret_file_check("PVE token secret", config.proxmox.token_secret_file,
                                    key=False))
    return checks
