"""`blockhost init` run as root hands what it writes to the daemon's user (a throw-away system
user made for the test): config root:GROUP 0640, a generated key USER:GROUP 0600, and one
line with the exact chown for an existing key or token file of another owner. Without such
a user and without --owner it says what it left as it is."""

from __future__ import annotations

import grp
import os
import pwd
import re
import secrets
import shlex
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from listener.ops import init as init_ops
from tests.ops.test_init import blockhost, host_flags, secret_file

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="init changes owners only as root")

CONTRACTS = ["--rpc-url", "http://127.0.0.1:9", "--chain-id", "31337", "--start-block", "1",
             "--subscription-contract", "0x" + "11" * 20, "--nft-contract", "0x" + "22" * 20]


@pytest.fixture
def daemon_user() -> Iterator[str]:
    """A system user (with its own group) that exists only for this test."""
    useradd, userdel = shutil.which("useradd"), shutil.which("userdel")
    if useradd is None or userdel is None:
        pytest.skip("useradd/userdel are not installed: no throw-away user can be made")
    name = f"bhtest{secrets.token_hex(3)}"
    subprocess.run([useradd, "--system", "--user-group", "--no-create-home", "--shell",
                    "/usr/sbin/nologin", name], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run([userdel, name], check=True, capture_output=True)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return {"config": tmp_path / "etc" / "blockhost.yaml",
            "server_key": tmp_path / "etc" / "server.key",
            "deployer": secret_file(tmp_path / "deployer.key", "ab" * 32 + "\n"),
            "token": secret_file(tmp_path / "pve-token", "token-secret\n"),
            "db": tmp_path / "state" / "blockhost.db"}


def owner(path: Path) -> tuple[str, str, int]:
    info = path.stat()
    return (pwd.getpwuid(info.st_uid).pw_name, grp.getgrgid(info.st_gid).gr_name,
            stat.S_IMODE(info.st_mode))


def test_init_as_root_gives_the_daemon_user_what_it_wrote(
        daemon_user: str, files: dict[str, Path]) -> None:
    proc = blockhost(files["config"], "init", *CONTRACTS, *host_flags(files),
                     "--owner", daemon_user)
    assert owner(files["config"]) == ("root", daemon_user, 0o640)
    assert owner(files["config"].parent) == ("root", daemon_user, 0o750)
    assert owner(files["server_key"]) == (daemon_user, daemon_user, 0o600)
    assert f"owners for the daemon's user {daemon_user}" in proc.stdout
    # the test's own deployer and token files are root's: one exact chown line each, exit 1
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2, lines
    commands = [re.search(r"run `(chown [^`]+)`", line) for line in lines]
    for path, found in zip(("deployer", "token"), commands, strict=True):
        assert found is not None and found.group(1) == (
            f"chown {daemon_user}:{daemon_user} {files[path]}")
        assert owner(files[path])[0] == "root"  # only offered, never done
        subprocess.run(shlex.split(found.group(1)), check=True)

    again = blockhost(files["config"], "init")
    assert again.returncode == 0, again.stderr
    assert "kept" in again.stdout and again.stderr == ""


def test_the_blockhost_user_is_the_default_owner(
        daemon_user: str, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(init_ops, "DAEMON_USER", daemon_user)
    found = init_ops.resolve_owner(None)
    assert found is not None and (found.user, found.group) == (daemon_user, daemon_user)
    assert found.uid == pwd.getpwnam(daemon_user).pw_uid


def test_without_the_user_init_says_what_it_left(files: dict[str, Path],
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    missing = f"bhnone{secrets.token_hex(3)}"
    monkeypatch.setattr(init_ops, "DAEMON_USER", missing)
    assert init_ops.resolve_owner(None) is None
    from listener.cli.main import main

    code = main(["--config", str(files["config"]), "init", *CONTRACTS, *host_flags(files)])
    assert code == 0
    assert f"owners left as they are (root): no `{missing}` user exists" in capsys.readouterr().out
    assert owner(files["config"]) == ("root", "root", 0o640)
    assert owner(files["server_key"]) == ("root", "root", 0o600)


def test_the_cli_names_what_it_left_as_it_is(files: dict[str, Path]) -> None:
    if _exists("blockhost"):
        pytest.skip("this machine has a `blockhost` user: init would hand the files to it")
    proc = blockhost(files["config"], "init", *CONTRACTS, *host_flags(files))
    assert proc.returncode == 0, proc.stderr
    assert "owners left as they are (root): no `blockhost` user exists and no --owner" \
        in proc.stdout
    assert owner(files["config"])[:2] == ("root", "root")


def test_an_unknown_owner_is_refused_before_anything_is_written(files: dict[str, Path]) -> None:
    name = f"bhnone{secrets.token_hex(3)}"
    proc = blockhost(files["config"], "init", *CONTRACTS, *host_flags(files), "--owner", name)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"blockhost: error: --owner {name}: no such user; create it (useradd --system {name}) "
        "or name the user the daemon runs as"]
    assert not files["config"].exists() and not files["server_key"].exists()


def _exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True
