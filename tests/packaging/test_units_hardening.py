"""The services are hardened (issue 17): each rates at most 2.5 in `systemd-analyze security`,
the GC pass (it destroys VMs with the listener's token) is exactly as tight as the listener,
and `systemd-analyze verify` accepts every unit with the paths the Debian package installs.

systemd-analyze is part of systemd; without it these checks skip, except under CI=true.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from listener.config import Config
from tests.support.paths import REPO_ROOT

UNITS = REPO_ROOT / "systemd"
SERVICES = ["blockhost-listener.service", "blockhost-gc.service", "blockhost-backup.service",
            "blockhost-web.service"]
MAX_EXPOSURE = 2.5
#: What only a long-running notify daemon has; every other [Service] line the GC unit shares.
LISTENER_ONLY = {"Type", "NotifyAccess", "ExecStart", "WatchdogSec", "Restart", "RestartSec",
                 "KillSignal", "TimeoutStopSec"}
#: Where the host keeps systemd's own units (sysinit.target and the rest verify resolves).
HOST_UNIT_DIRS = [Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")]
_EXPOSURE = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)")


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("systemd-analyze is not on PATH; CI must check the units (apt install systemd)")
        pytest.skip("systemd-analyze is not installed")
    return found


def exposure(unit: Path) -> float:
    result = subprocess.run([systemd_analyze(), "security", "--offline=true", str(unit)],
                            capture_output=True, text=True, timeout=120, check=False)
    match = _EXPOSURE.search(result.stdout)
    assert result.returncode == 0 and match, result.stdout[-2000:] + result.stderr[-2000:]
    return float(match.group(1))


def service_lines(unit: Path) -> dict[str, list[str]]:
    """[Service] directives in order, repeated keys kept (SystemCallFilter comes twice)."""
    lines: dict[str, list[str]] = {}
    section = ""
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line and not line.startswith("#"):
            key, _, value = line.partition("=")
            lines.setdefault(key, []).append(value)
    return lines


def verify_installed(units: list[Path], root: Path, blockhost: Path | None) -> str:
    """`systemd-analyze verify` in a root laid out as installed: the host's own units, ours
    beside them and (unless the root already has one) /usr/bin/blockhost; returns its output."""
    unit_dir = root / "usr/lib/systemd/system"
    host_dir = next((d for d in HOST_UNIT_DIRS if (d / "sysinit.target").exists()), None)
    if host_dir is None:
        pytest.skip("no systemd unit directory on this host")
    shutil.copytree(host_dir, unit_dir, symlinks=True, dirs_exist_ok=True)
    for unit in units:
        shutil.copy2(unit, unit_dir / unit.name)
    if blockhost is not None:
        (root / "usr/bin").mkdir(parents=True, exist_ok=True)
        shutil.copy2(blockhost, root / "usr/bin/blockhost")
    result = subprocess.run([systemd_analyze(), "verify", f"--root={root}", "--man=no",
                             *(unit.name for unit in units)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_rates_at_most_2_5(name: str) -> None:
    assert exposure(UNITS / name) <= MAX_EXPOSURE


def test_the_gc_pass_is_as_tight_as_the_listener() -> None:
    listener = service_lines(UNITS / "blockhost-listener.service")
    gc = service_lines(UNITS / "blockhost-gc.service")
    shared = {key: value for key, value in listener.items() if key not in LISTENER_ONLY}
    assert {key: gc.get(key) for key in shared} == shared
    assert exposure(UNITS / "blockhost-gc.service") <= exposure(UNITS / "blockhost-listener.service")


@pytest.mark.parametrize("name", SERVICES)
def test_services_keep_what_the_daemon_needs(name: str) -> None:
    """Hardening that would break it: the state directory rw, /etc/blockhost readable,
    IPv4/IPv6 for the RPC and PVE APIs (the backup needs none), AF_UNIX for sd_notify."""
    service = service_lines(UNITS / name)
    assert service["StateDirectory"] == ["blockhost"] and service["ProtectSystem"] == ["strict"]
    hidden = {path.lstrip("-") for key in ("InaccessiblePaths", "TemporaryFileSystem")
              for line in service.get(key, []) for path in line.split()}
    config = Config()
    assert not hidden & {"/etc/blockhost", "/etc/blockhost/blockhost.yaml",
                         str(config.server_key_file), str(config.db.path.parent)}
    families = set(service["RestrictAddressFamilies"][0].split())
    needs = {"AF_UNIX"} if name == "blockhost-backup.service" else {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert families == needs
    assert service["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    assert service["UMask"] == ["0077"] and service["ExecStart"][0].startswith("/usr/bin/blockhost ")


def test_the_web_pages_cannot_read_the_signer_key_or_the_pve_token() -> None:
    """The internet-facing unit: the default paths of the two secrets it never needs are
    hidden from it (drift in the config's defaults fails here)."""
    service = service_lines(UNITS / "blockhost-web.service")
    hidden = {path.lstrip("-") for line in service["InaccessiblePaths"] for path in line.split()}
    config = Config()
    assert hidden == {str(config.signer.private_key_file),
                      str(config.proxmox.token_secret_file)}


def test_units_verify_with_the_installed_paths(tmp_path: Path) -> None:
    """ExecStart=/usr/bin/blockhost as the package installs it (here: this venv's script)."""
    units = sorted(UNITS.glob("*.service")) + sorted(UNITS.glob("*.timer"))
    output = verify_installed(units, tmp_path, Path(sys.prefix) / "bin" / "blockhost")
    assert output == ""  # any warning (an unknown key, a bad value) is a failure


def test_verify_catches_a_missing_executable(tmp_path: Path) -> None:
    """The check above can fail: without /usr/bin/blockhost in the root, verify refuses."""
    unit = UNITS / "blockhost-gc.service"
    unit_dir = tmp_path / "usr/lib/systemd/system"
    with pytest.raises(AssertionError, match="is not executable"):
        verify_installed([unit], tmp_path, None)
    assert (unit_dir / unit.name).exists()
