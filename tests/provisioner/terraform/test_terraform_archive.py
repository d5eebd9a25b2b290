"""A destroyed VM's Terraform directory is archived for audit without its secrets: the
user data in ``main.tf.json`` and every state file (which repeats it) never reach
``.archive``, old archives are scrubbed, and a crash mid-archive leaves no secret behind."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from provisioner.terraform.layout import ARCHIVE, archive, scrub_archives, write_main
from provisioner.terraform.render import render_vm_bytes
from tests.provisioner.terraform.pve_configs import TEMPLATE
from tests.provisioner.terraform.test_terraform_render import SETTINGS, make_spec

SECRET = "SECRET_KEY=SECRETKEY-0123456789abcdef"


def live_dir(root: Path, name: str = "blockhost-42") -> Path:
    """A VM directory as the backend leaves it after ``terraform destroy``."""
    directory = root / name
    spec = make_spec(user_data=f"#cloud-config\nwrite_files:\n- content: {SECRET}\n")
    write_main(directory, render_vm_bytes(spec, SETTINGS, inherited=TEMPLATE))
    state = {"version": 4, "serial": 7, "lineage": "l-1", "resources": [
        {"mode": "managed", "type": "proxmox_virtual_environment_file", "name": "user_data",
         "instances": [{"attributes": {"id": "local:snippets/blockhost-42-user.yaml",
                                       "source_raw": [{"data": SECRET}]}}]}]}
    (directory / "terraform.tfstate").write_text(json.dumps({**state, "resources": []}))
    (directory / "terraform.tfstate.backup").write_text(json.dumps(state))
    (directory / ".terraform" / "providers").mkdir(parents=True)
    (directory / ".terraform" / "providers" / "blob").write_text(SECRET)
    (directory / ".terraform.lock.hcl").write_text('provider "registry/bpg/proxmox" {}\n')
    return directory


def all_bytes(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file())


def test_archive_keeps_the_audit_trail_and_no_secret(tmp_path: Path) -> None:
    directory = live_dir(tmp_path)
    target = archive(directory, 4200)
    assert target is not None and not directory.exists()
    assert b"SECRETKEY" not in all_bytes(tmp_path / ARCHIVE)
    assert sorted(p.name for p in target.iterdir()) == \
        [".terraform.lock.hcl", "main.tf.json", "state-summary.json"]
    doc = json.loads((target / "main.tf.json").read_text())
    data = doc["resource"]["proxmox_virtual_environment_file"]["user_data"]["source_raw"]["data"]
    assert data.startswith("<scrubbed user data:") and "sha256" in data
    assert doc["resource"]["proxmox_virtual_environment_vm"]["vm"]["vm_id"] == 4200
    summary = json.loads((target / "state-summary.json").read_text())
    assert summary["terraform.tfstate.backup"]["resources"] == [
        {"address": "proxmox_virtual_environment_file.user_data",
         "ids": ["local:snippets/blockhost-42-user.yaml"]}]
    for path in [target, *target.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), path


def test_old_archives_and_crash_leftovers_are_scrubbed(tmp_path: Path) -> None:
    old = live_dir(tmp_path)
    (tmp_path / ARCHIVE).mkdir(mode=0o700)
    os.replace(old, tmp_path / ARCHIVE / "blockhost-42.4200.20260101T000000Z")
    partial = tmp_path / ARCHIVE / ".partial-blockhost-7.700.20260101T000000Z"
    partial.mkdir()
    (partial / "main.tf.json").write_text("{}")
    done = scrub_archives(tmp_path)
    assert [p.name for p in done] == ["blockhost-42.4200.20260101T000000Z"]
    assert b"SECRETKEY" not in all_bytes(tmp_path / ARCHIVE)
    assert [p.name for p in (tmp_path / ARCHIVE).iterdir()] == [done[0].name]
    assert scrub_archives(tmp_path) == []  # idempotent: a scrubbed archive stays as it is
