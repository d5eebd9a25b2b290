"""`make deb`: the Debian package's files, maintainer scripts, units and lintian verdict.

Building it fills a virtual environment from the lock (2 to 7 minutes on 2 cores), so the
module builds once, and only where dpkg-buildpackage is installed and CI=true or
BLOCKHOST_DEB_TEST=1 asks for it; BLOCKHOST_DEB=path/to/the.deb checks a package built
already. Installing it for real is packaging/check-install.sh (docs/packaging.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.packaging.test_units_hardening import verify_installed
from tests.support.paths import REPO_ROOT

pytestmark = pytest.mark.slow

VENV = Path("opt/venvs/blockhost-provisioner")
COMMANDS = ["blockhost", "blockhost-vm-create", "blockhost-vm-gc", "blockhost-mint-nft"]
UNITS = sorted(p.name for p in (REPO_ROOT / "systemd").iterdir())
SCRIPTS = {"preinst", "postinst", "prerm", "postrm"}


@dataclass(frozen=True)
class Package:
    """The .deb, its files extracted under `root` and its control files under `control`."""

    deb: Path
    root: Path
    control: Path

    def venv_python(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """The packaged venv's interpreter (a link to /usr/bin/python3) with its site-packages."""
        return subprocess.run([str(self.root / VENV / "bin/python"), *argv], cwd=self.root,
                              capture_output=True, text=True, timeout=120, check=False)


def _run(argv: list[str], *, timeout: float, cwd: Path | None = None) -> str:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _the_deb(out: Path) -> Path:
    given = os.environ.get("BLOCKHOST_DEB")
    if given:
        return Path(given).resolve()
    if os.environ.get("BLOCKHOST_DEB_TEST") != "1" and os.environ.get("CI", "").lower() != "true":
        pytest.skip("set BLOCKHOST_DEB_TEST=1 to build the package (minutes), or BLOCKHOST_DEB=FILE")
    if shutil.which("dpkg-buildpackage") is None:
        pytest.skip("dpkg-buildpackage is not installed (apt install devscripts dh-virtualenv)")
    _run([str(REPO_ROOT / "packaging/build-deb.sh"), str(out)], timeout=3600)
    (deb,) = out.glob("blockhost-provisioner_*.deb")
    return deb


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Package]:
    work = tmp_path_factory.mktemp("deb")
    deb = _the_deb(work / "dist")
    _run(["dpkg-deb", "-x", str(deb), str(work / "root")], timeout=300)
    _run(["dpkg-deb", "-e", str(deb), str(work / "control")], timeout=60)
    yield Package(deb=deb, root=work / "root", control=work / "control")


def test_commands_link_into_the_venv(package: Package) -> None:
    for name in COMMANDS:
        link = package.root / "usr/bin" / name
        assert link.is_symlink() and os.readlink(link) == f"/{VENV}/bin/{name}", name
        script = package.root / VENV / "bin" / name
        assert os.access(script, os.X_OK), name
        assert script.read_text().startswith(f"#!/{VENV}/bin/python\n"), name
    assert not (package.root / "usr/bin/blockhost-pvesim").exists()  # demo tooling only


def test_units_templates_and_example_config_are_shipped(package: Package) -> None:
    for name in UNITS:
        shipped = package.root / "lib/systemd/system" / name
        assert shipped.read_bytes() == (REPO_ROOT / "systemd" / name).read_bytes(), name
    templates = package.root / "usr/share/blockhost/cloud-init/templates"
    for source in (REPO_ROOT / "cloud-init/templates").glob("*.yaml"):
        assert (templates / source.name).read_bytes() == source.read_bytes()
    conffiles = (package.control / "conffiles").read_text().split()
    assert conffiles == ["/etc/blockhost/blockhost.yaml.example"]
    assert not (package.root / "etc/blockhost/blockhost.yaml").exists()  # `init` or the operator
    assert not (package.root / "var/lib/blockhost").exists()  # made by the postinst, 0750


def test_the_venv_holds_only_what_runs(package: Package) -> None:
    """No pip and no bytecode in the package (the postinst compiles it); the wheel's data."""
    venv = package.root / VENV
    assert not list(venv.rglob("__pycache__")) and not list(venv.glob("bin/pip*"))
    site = next(venv.glob("lib/python3.*/site-packages"))
    assert not (site / "pip").exists()
    assert (site / "blockhost_data/artifacts/BlockhostSubscriptions.json").is_file()
    assert (site / "blockhost_data/templates/nft-auth.yaml").is_file()


def test_the_packaged_venv_runs_the_cli(package: Package) -> None:
    script = str(package.root / VENV / "bin/blockhost")
    result = package.venv_python("-I", script, "--help")
    assert result.returncode == 0, result.stderr
    assert "listen" in result.stdout
    result = package.venv_python("-I", "-c", "import listener, blockhost_data; "
                                 "print(listener.__file__, blockhost_data.packaged_dir('templates'))")
    assert result.returncode == 0, result.stderr
    for path in result.stdout.split():
        assert Path(path).is_relative_to(package.root / VENV), path


def test_maintainer_scripts_parse_and_never_start_a_unit(package: Package) -> None:
    present = {p.name for p in package.control.iterdir()} & SCRIPTS
    assert present >= {"postinst", "prerm", "postrm"}
    for name in sorted(present):
        _run(["sh", "-n", str(package.control / name)], timeout=30)
    postinst = (package.control / "postinst").read_text()
    assert "adduser --system" in postinst
    assert "dpkg-statoverride --update --add root blockhost 0750 /etc/blockhost" in postinst
    assert "-o blockhost -g blockhost -m 0750 /var/lib/blockhost" in postinst
    # --no-enable: a unit is enabled only again on upgrade, if the operator had enabled it;
    # deb-systemd-invoke starts or restarts only enabled (or running) units.
    installable = [u for u in (REPO_ROOT / "systemd").iterdir()
                   if "\n[Install]\n" in u.read_text()]  # each enable-able unit, one block
    assert len(installable) >= 4
    assert postinst.count("deb-systemd-helper enable") == postinst.count(
        "deb-systemd-helper --quiet was-enabled") == len(installable)
    postrm = (package.control / "postrm").read_text()
    assert 'if [ "$1" = "purge" ]; then\n    rm -rf /var/lib/blockhost' in postrm


def test_units_verify_as_installed(package: Package, tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(package.root, root, symlinks=True)
    units = sorted((root / "lib/systemd/system").iterdir())
    assert [u.name for u in units] == UNITS
    assert verify_installed(units, root, None) == ""


def test_lintian_reports_no_errors(package: Package) -> None:
    if shutil.which("lintian") is None:
        pytest.skip("lintian is not installed")
    result = subprocess.run(["lintian", "--tag-display-limit", "0", str(package.deb)],
                            capture_output=True, text=True, timeout=1800, check=False)
    errors = [line for line in result.stdout.splitlines() if line.startswith("E:")]
    assert errors == [], "\n".join(errors[:20])
    assert result.returncode == 0, result.stderr  # lintian fails on errors only
