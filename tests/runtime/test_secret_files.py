"""Secrets that are not keys (the Proxmox token) get the same owner-only file rules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from listener.errors import UserError
from listener.runtime.wiring import read_secret_file


def write(path: Path, text: str, mode: int) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_owner_only_token_is_read_and_stripped(tmp_path: Path) -> None:
    path = write(tmp_path / "pve-token", " 0f1e2d3c-aaaa\n", 0o600)
    assert read_secret_file(path, "Proxmox token secret") == "0f1e2d3c-aaaa"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_group_or_world_access_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    path = write(tmp_path / "pve-token", "secret-value", mode)
    with pytest.raises(UserError) as info:
        read_secret_file(path, "Proxmox token secret")
    message = str(info.value)
    assert f"chmod 600 {path}" in message and "secret-value" not in message


def test_missing_empty_and_directory(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        read_secret_file(tmp_path / "absent", "Proxmox token secret")
    with pytest.raises(UserError, match="is empty"):
        read_secret_file(write(tmp_path / "empty", "\n", 0o600), "Proxmox token secret")
    directory = tmp_path / "dir"
    directory.mkdir(mode=0o700)
    with pytest.raises(UserError, match="not a regular file"):
        read_secret_file(directory, "Proxmox token secret")
