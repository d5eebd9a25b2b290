"""TerraformRunner mechanics with the real ``terraform`` binary and provider-free
``terraform_data`` resources, in the same per-VM layout the backend uses.

The bpg/proxmox provider cannot be downloaded here, so these tests cover what the runner
owns: init, apply, idempotent re-apply, destroy, per-VM state, environment-only credentials,
output capture, and crashes (SIGKILL of real processes) followed by convergence.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from provisioner.terraform.layout import archive, vm_dir, write_main
from provisioner.terraform.render import escape_document, to_json_bytes
from provisioner.terraform.runner import (
    TerraformError,
    TerraformInitFailed,
    TerraformNotInstalled,
    TerraformRunner,
    state_addresses,
)

needs_terraform = pytest.mark.skipif(
    shutil.which("terraform") is None,
    reason="the `terraform` binary is not on PATH (install Terraform >= 1.5 to run the "
           "runner tests)")


def data_doc(input_value: Any, *, provisioner: str | None = None,
             outputs: dict[str, str] | None = None) -> bytes:
    """A provider-free document shaped like ours: escaped strings, sorted keys."""
    res: dict[str, Any] = {"input": input_value}
    if provisioner is not None:
        res["provisioner"] = [{"local-exec": {"command": provisioner}}]
    doc: dict[str, Any] = {"//": "test", "terraform": {"required_version": ">= 1.5.0"},
                           "resource": {"terraform_data": {"vm": res}}}
    if outputs:
        doc["output"] = {k: {"value": v} for k, v in outputs.items()}
    return to_json_bytes(escape_document(doc))


@pytest.fixture(autouse=True)
def _default_logging() -> Iterator[None]:
    """Other tests' `blockhost` main() may have pointed structlog at a closed capture
    stream; these tests log a lot, so start from structlog's defaults."""
    structlog.reset_defaults()
    yield


@pytest.fixture
def runner(tmp_path: Path) -> TerraformRunner:
    return TerraformRunner(plugin_cache_dir=tmp_path / "plugin-cache", lock_timeout_s=5)


def tf_id(directory: Path) -> str:
    state = json.loads((directory / "terraform.tfstate").read_text())
    [res] = [r for r in state["resources"] if r["type"] == "terraform_data"]
    return res["instances"][0]["attributes"]["id"]


# ----------------------------------------------------------------------------- errors


def test_missing_binary_gives_one_clear_error(tmp_path: Path) -> None:
    runner = TerraformRunner(binary="terraform-not-installed-here")
    with pytest.raises(TerraformNotInstalled) as info:
        runner.ensure_init(vm_dir(tmp_path, "blockhost-1"))
    text = str(info.value)
    assert "\n" not in text and "install Terraform" in text and "proxmox.backend" in text


@needs_terraform
def test_failed_init_gives_one_clear_error(tmp_path: Path, runner: TerraformRunner) -> None:
    directory = vm_dir(tmp_path, "blockhost-1")
    doc = {"terraform": {"required_version": ">= 99.0"}}
    write_main(directory, to_json_bytes(doc))
    with pytest.raises(TerraformInitFailed) as info:
        runner.ensure_init(directory)
    text = str(info.value)
    assert "\n" not in text and "terraform init failed" in text
    assert "Unsupported Terraform Core version" in text and "provider" in text
    assert not (directory / ".blockhost-init").exists()


# ----------------------------------------------------------------------------- lifecycle


@needs_terraform
def test_init_apply_reapply_destroy_in_per_vm_dirs(tmp_path: Path,
                                                   runner: TerraformRunner) -> None:
    a, b = vm_dir(tmp_path, "blockhost-1"), vm_dir(tmp_path, "blockhost-2")
    write_main(a, data_doc({"cores": 2}))
    write_main(b, data_doc({"cores": 4}))
    with capture_logs() as logs:
        assert runner.ensure_init(a) is True
        assert runner.ensure_init(a) is False  # nothing changed in the terraform block
        first = runner.apply(a)
    assert first.changed() and first.change_summary()["add"] == 1
    assert any(e["event"] == "terraform.exit" and e["returncode"] == 0 for e in logs)
    assert state_addresses(a) == ["terraform_data.vm"] and state_addresses(b) == []
    created = tf_id(a)

    again = runner.apply(a)  # re-apply of an unchanged VM: no change
    assert not again.changed() and tf_id(a) == created
    assert runner.plan_has_changes(a) is False

    runner.ensure_init(b)
    runner.apply(b)  # the other VM has its own state and lock
    assert state_addresses(b) == ["terraform_data.vm"] and tf_id(b) != created

    write_main(a, data_doc({"cores": 8}))
    assert runner.plan_has_changes(a) is True
    assert runner.apply(a).changed()

    gone = runner.destroy(a)
    assert gone.change_summary().get("remove") == 1
    assert state_addresses(a) == [] and state_addresses(b) == ["terraform_data.vm"]
    moved = archive(a, 100)
    assert moved is not None and moved.parent.name == ".archive" and not a.exists()
    assert not (moved / "terraform.tfstate").exists()  # scrubbed: only its summary is kept
    summary = json.loads((moved / "state-summary.json").read_text())
    assert summary["terraform.tfstate"]["resources"] == []


@needs_terraform
def test_credentials_only_in_environment_and_scrubbed_from_output(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "5d1c0c3a-9a7e-4f7e-b0f4-2b3f9a1c7d10"
    monkeypatch.setenv("BLOCKHOST_UNRELATED_SECRET", "do-not-pass")
    monkeypatch.setenv("PROXMOX_VE_SSH_USERNAME", "terraform-ssh")
    runner = TerraformRunner(plugin_cache_dir=tmp_path / "cache", secrets=[secret],
                             env={"PROXMOX_VE_API_TOKEN": f"blockhost@pve!tf={secret}"})
    directory = vm_dir(tmp_path, "blockhost-1")
    command = ("printf '%s' \"$PROXMOX_VE_API_TOKEN\" > token.txt; env > env.txt; "
               "tr '\\0' ' ' < /proc/$PPID/cmdline > argv.txt; echo leak:$PROXMOX_VE_API_TOKEN")
    write_main(directory, data_doc("x", provisioner=command))
    with capture_logs() as logs:
        runner.ensure_init(directory)
        result = runner.apply(directory)
    assert (directory / "token.txt").read_text() == f"blockhost@pve!tf={secret}"
    env = (directory / "env.txt").read_text()
    assert "TF_IN_AUTOMATION=1" in env and "do-not-pass" not in env
    assert "PROXMOX_VE_SSH_USERNAME=terraform-ssh" in env
    argv = (directory / "argv.txt").read_text()
    assert "apply" in argv and "-input=false" in argv and "-lock-timeout=" in argv
    assert secret not in argv
    captured = json.dumps(result.messages) + "\n".join(result.text)
    assert "leak:blockhost@pve!tf=***" in captured and secret not in captured
    assert logs and secret not in repr(logs)
    assert secret not in repr(runner)


@needs_terraform
def test_hostile_strings_survive_real_terraform_as_literals(tmp_path: Path,
                                                           runner: TerraformRunner) -> None:
    rng = random.Random(4)
    pieces = ["${", "%{", "$${", "%%{", "}", "$", "%", "{", '"', "\\", "\n", "\t", "\x1b", "\x00", "\r",
              "\u2028", "é", "✓", "'", "${path.cwd}", "%{ if true }x%{ endif }", "${file(\"/etc/passwd\")}"]
    values = ["${var.x}", "%{for i in [1]}${i}%{endfor}", "$${", "$$${x}", "a\\\"b",
              "\r$${", "$\r${x}", "a\r%%{", "\r\n${x}", "\x00${x}"]
    values += ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 12))) for _ in range(40)]
    outputs = {f"o{i}": v for i, v in enumerate(values)}
    directory = vm_dir(tmp_path, "blockhost-1")
    write_main(directory, data_doc("x", outputs=outputs))
    runner.ensure_init(directory)
    result = runner.apply(directory)
    summary = [m for m in result.messages if m.get("type") == "outputs"][-1]
    got = {k: v["value"] for k, v in summary["outputs"].items()}
    assert got == outputs


# ----------------------------------------------------------------------------- crashes

HELPER = """
import json, sqlite3, sys, time
from pathlib import Path
import structlog
from provisioner.terraform.runner import TerraformRunner

structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
directory, db, mode, cache = Path(sys.argv[1]), sys.argv[2], sys.argv[3], Path(sys.argv[4])
runner = TerraformRunner(plugin_cache_dir=cache, lock_timeout_s=5)
with runner.dir_lock(directory):
    runner.ensure_init(directory)
    result = runner.apply(directory)
    print("APPLIED", int(result.changed()), flush=True)
    if mode == "pause":
        time.sleep(120)  # the test kills us here: applied, not yet recorded
    state = json.loads((directory / "terraform.tfstate").read_text())
    tf_id = state["resources"][0]["instances"][0]["attributes"]["id"]
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE IF NOT EXISTS rec (name TEXT PRIMARY KEY, tf_id TEXT NOT NULL)")
    con.execute("INSERT OR REPLACE INTO rec VALUES (?, ?)", (directory.name, tf_id))
    con.commit()
    print("RECORDED", flush=True)
"""


def start_helper(tmp_path: Path, directory: Path, mode: str) -> subprocess.Popen[str]:
    script = tmp_path / "helper.py"
    script.write_text(HELPER)
    return subprocess.Popen(
        [sys.executable, str(script), str(directory), str(tmp_path / "records.db"), mode,
         str(tmp_path / "plugin-cache")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def records(tmp_path: Path) -> list[tuple[str, str]]:
    con = sqlite3.connect(tmp_path / "records.db")
    try:
        return con.execute("SELECT name, tf_id FROM rec").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


@needs_terraform
def test_sigkill_between_apply_and_record_then_converge(tmp_path: Path) -> None:
    directory = vm_dir(tmp_path, "blockhost-1")
    write_main(directory, data_doc({"cores": 2}))
    proc = start_helper(tmp_path, directory, "pause")
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.split() == ["APPLIED", "1"]
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert state_addresses(directory) == ["terraform_data.vm"]  # applied ...
    assert records(tmp_path) == []  # ... but never recorded
    created = tf_id(directory)

    again = start_helper(tmp_path, directory, "go")  # restart: the same step runs again
    out, _ = again.communicate(timeout=120)
    assert again.returncode == 0, out
    assert out.split() == ["APPLIED", "0", "RECORDED"]  # nothing re-created
    assert records(tmp_path) == [("blockhost-1", created)]
    assert tf_id(directory) == created


@needs_terraform
def test_sigkill_of_terraform_during_apply_then_converge(tmp_path: Path,
                                                        runner: TerraformRunner) -> None:
    directory = vm_dir(tmp_path, "blockhost-1")
    slow = ("[ -e fast ] || { echo $PPID > tfpid; echo started > started; sleep 120; }")
    write_main(directory, data_doc({"cores": 2}, provisioner=slow))
    proc = start_helper(tmp_path, directory, "go")
    deadline = time.monotonic() + 120
    while not (directory / "started").exists():
        assert proc.poll() is None, "helper exited before the provisioner started"
        assert time.monotonic() < deadline, "provisioner never started"
        time.sleep(0.05)
    tf_pid = int((directory / "tfpid").read_text())
    os.killpg(tf_pid, signal.SIGKILL)  # terraform and its provisioner, mid-apply
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "RECORDED" not in out
    assert records(tmp_path) == []

    (directory / "fast").write_text("")
    result = runner.apply(directory)  # the state lock died with the process
    assert state_addresses(directory) == ["terraform_data.vm"]
    assert result.change_summary().get("add", 0) <= 1
    assert runner.plan_has_changes(directory) is False


def test_dir_lock_is_exclusive_and_fails_clearly(tmp_path: Path) -> None:
    directory = vm_dir(tmp_path, "blockhost-1")
    holder = TerraformRunner(dir_lock_timeout_s=0.2)
    other = TerraformRunner(dir_lock_timeout_s=0.2)
    with holder.dir_lock(directory), pytest.raises(TerraformError) as info, other.dir_lock(directory):
        pass
    assert info.value.retryable and "busy" in str(info.value)
    with other.dir_lock(directory):  # released with the holder
        pass


@needs_terraform
def test_what_terraform_writes_is_private_under_an_open_umask(tmp_path: Path,
                                                              runner: TerraformRunner) -> None:
    """The state repeats the user data; terraform runs under umask 077 whoever calls it."""
    directory = vm_dir(tmp_path, "blockhost-3")
    write_main(directory, data_doc({"cores": 1}))
    old = os.umask(0)
    try:
        runner.ensure_init(directory)
        runner.apply(directory)
    finally:
        os.umask(old)
    written = [p for p in directory.rglob("*") if not p.is_symlink()]
    assert any(p.name == "terraform.tfstate" for p in written)
    loose = {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in written
             if stat.S_IMODE(p.stat().st_mode) & 0o077}
    assert loose == {}
