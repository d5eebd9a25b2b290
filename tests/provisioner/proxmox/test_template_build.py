"""`blockhost template build` logic against the simulator over HTTPS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from provisioner.backend import VMSpec
from provisioner.errors import NotFound, PermissionDenied, VmidTaken
from provisioner.proxmox.backend import ProxmoxAPIBackend
from provisioner.proxmox.template_build import TemplateSpec, build_template, create_params
from provisioner.pvesim.launcher import PveSim
from tests.support.crashes import sigkill_when
from tests.support.paths import REPO_ROOT
from tests.support.pve import StartSim, api_backend, start_sim

IMAGE = "local:import/noble-server-cloudimg-amd64.qcow2"


@pytest.fixture(scope="module")
def sim_module(module_sims: StartSim) -> tuple[PveSim, Path]:
    """Root token (a template is built outside the pool), a real storage 'local' holding the
    cloud image to import, and 0.6 s clone/create tasks so a kill lands mid-task."""
    sim = module_sims(pool_scoped=False, snippets=True, clone_seconds=0.6)
    assert sim.snippets_dir is not None
    (sim.snippets_dir / "import").mkdir()
    return sim, sim.snippets_dir


@pytest.fixture
def sim(sim_module: tuple[PveSim, Path]) -> PveSim:
    sim, storage = sim_module
    sim.reset()
    (storage / "import" / "noble-server-cloudimg-amd64.qcow2").write_bytes(b"QFI\xfb fake")
    return sim


def backend(sim: PveSim) -> ProxmoxAPIBackend:
    return api_backend(sim, poll_interval=0.02, task_timeout=20)


def tasks(sim: PveSim, ttype: str) -> list[dict[str, Any]]:
    return [t for t in sim.state()["tasks"] if t["type"] == ttype]


def test_build_creates_a_cloud_init_template_and_a_rerun_does_nothing(sim: PveSim) -> None:
    b = backend(sim)
    spec = TemplateSpec(vmid=9100, node="pve2", image=IMAGE, storage="local-lvm")
    result = build_template(b, spec)
    assert (result.action, result.node, result.steps) == ("created", "pve2",
                                                          ("created", "converted"))
    vm = sim.vm(9100)
    c = vm["config"]
    assert vm["template"] and vm["status"] == "stopped" and vm["node"] == "pve2"
    assert c["scsi0"].startswith("local-lvm:base-9100-disk-0,") and "size=3584M" in c["scsi0"]
    assert c["ide2"] == "local-lvm:vm-9100-cloudinit,media=cdrom"
    assert (c["serial0"], c["vga"], c["agent"], c["boot"]) == ("socket", "serial0", "1",
                                                              "order=scsi0")
    assert c["description"].startswith("managed-by=blockhost;role=template\n")
    assert "import-from" not in json.dumps(c)
    before = len(sim.state()["tasks"])
    again = build_template(b, spec)
    assert (again.action, again.steps) == ("exists", ())
    assert len(sim.state()["tasks"]) == before  # a second run does nothing
    assert sim.vm(9100)["config"] == c


def test_a_subscription_vm_clones_from_the_built_template(sim: PveSim) -> None:
    b = backend(sim)
    build_template(b, TemplateSpec(vmid=9100, node="pve1", image=IMAGE))
    ref = b.create(VMSpec(name="blockhost-1", vmid=500, node="pve2", template_vmid=9100,
                          cores=1, memory_mb=1024, disk_gb=10, ipv4_cidr=None, gateway4=None,
                          ipv6_cidr=None, gateway6=None, bridge="vmbr0", pool="blockhost",
                          tags=(), subscription_id=1, username="u", user_data=None))
    vm = sim.vm(500)
    assert vm["status"] == "running" and vm["node"] == "pve2" and ref.smbios_uuid
    assert vm["config"]["scsi0"].startswith("local-lvm:vm-500-disk-0,")
    assert "size=10G" in vm["config"]["scsi0"]
    assert vm["config"]["ide2"] == "local-lvm:vm-500-cloudinit,media=cdrom"


def test_missing_image_fails_in_the_task_and_leaves_nothing_behind(sim: PveSim,
                                                                   sim_module: tuple[PveSim, Path]
                                                                   ) -> None:
    b = backend(sim)
    missing = "local:import/does-not-exist.qcow2"
    with pytest.raises(NotFound, match="does not exist"):
        build_template(b, TemplateSpec(vmid=9100, node="pve1", image=missing))
    assert sim.vm(9100) is None  # PVE removes the half-created config: id free again
    assert build_template(b, TemplateSpec(vmid=9100, node="pve1", image=IMAGE)).action == "created"


def test_a_foreign_vm_at_the_template_id_is_refused_untouched(sim: PveSim) -> None:
    foreign = sim.create_vm(vmid=9100, name="someones-vm", status="stopped")
    with pytest.raises(VmidTaken, match="someones-vm"):
        build_template(backend(sim), TemplateSpec(vmid=9100, node="pve1", image=IMAGE))
    assert sim.vm(9100)["config"] == foreign["config"] and not sim.vm(9100)["template"]


def test_an_existing_hand_made_template_counts_as_done(sim: PveSim) -> None:
    result = build_template(backend(sim), TemplateSpec(vmid=9001, node="pve1", image=IMAGE))
    assert result.action == "exists" and result.node == "pve1"
    assert not tasks(sim, "qmcreate") and not tasks(sim, "qmtemplate")


def test_interrupted_between_create_and_convert_resumes(sim: PveSim) -> None:
    b = backend(sim)
    spec = TemplateSpec(vmid=9100, node="pve1", image=IMAGE)
    b.wait_task(b.request("POST", "nodes/pve1/qemu", **create_params(spec)))
    result = build_template(b, spec)
    assert (result.action, result.steps) == ("converted", ("converted",))
    assert sim.vm(9100)["template"] and len(tasks(sim, "qmcreate")) == 1


WORKER = r"""
import json, os, sys
from provisioner.proxmox.backend import ProxmoxAPIBackend
from provisioner.proxmox.template_build import TemplateSpec, build_template
a = json.loads(sys.argv[1])
b = ProxmoxAPIBackend(a["url"], a["token_id"], os.environ["PVE_TOKEN_SECRET"], verify=a["ca"],
                      pool="blockhost", poll_interval=0.02)
build_template(b, TemplateSpec(vmid=9100, node="pve1", image=a["image"]))
print("built", flush=True)
"""


def test_sigkill_during_the_create_task_converges(sim: PveSim, tmp_path: Path) -> None:
    args = {"url": sim.url, "token_id": sim.token_id, "ca": str(sim.ca_path), "image": IMAGE}
    env = dict(os.environ, PVE_TOKEN_SECRET=sim.token_secret,
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def create_running() -> bool:
        vm = sim.vm(9100)
        return vm is not None and vm["lock"] == "create"

    sigkill_when(proc, create_running, what="the create task",
                 output=lambda: proc.stdout.read().decode() if proc.stdout else "")
    result = build_template(backend(sim), TemplateSpec(vmid=9100, node="pve1", image=IMAGE))
    assert result.action == "converted"
    assert sim.vm(9100)["template"] and len(tasks(sim, "qmcreate")) == 1


def test_pool_token_cannot_create_outside_its_pool(tmp_path: Path) -> None:
    sim = start_sim(tmp_path, clone_seconds=0.05)
    try:
        b = backend(sim)
        with pytest.raises(PermissionDenied):
            build_template(b, TemplateSpec(vmid=9100, node="pve1", image=IMAGE))
        assert sim.vm(9100) is None
        result = build_template(b, TemplateSpec(vmid=9100, node="pve1", image=IMAGE,
                                                pool="blockhost"))
        assert result.action == "created" and sim.vm(9100)["pool"] == "blockhost"
    finally:
        sim.stop()


@pytest.mark.parametrize("field,value", [
    ("image", "local:iso/x.qcow2"), ("image", "local:import/../etc/x.qcow2"),
    ("image", "local:import/x.qcow2,cache=none"), ("image", "x.qcow2"),
    ("vmid", 99), ("node", "bad node"), ("storage", "Local LVM"), ("bridge", "vmbr0,tag=5"),
    ("tag", "bad tag"), ("cores", 0),
])
def test_spec_validation(field: str, value: Any) -> None:
    base: dict[str, Any] = {"vmid": 9100, "node": "pve1", "image": IMAGE}
    base[field] = value
    with pytest.raises(ValueError):
        TemplateSpec(**base).validate()


def test_cli_template_build_twice(sim: PveSim, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    from listener.cli.main import main

    secret = tmp_path / "pve-token"
    secret.write_text(sim.token_secret + "\n")
    secret.chmod(0o600)
    config = tmp_path / "blockhost.yaml"
    config.write_text(json.dumps({"proxmox": {
        "api_url": sim.url, "token_id": sim.token_id, "token_secret_file": str(secret),
        "verify_ssl": str(sim.ca_path), "template_vmid": 9100, "template_image": IMAGE,
        "nodes": ["pve2"]}, "db": {"path": str(tmp_path / "blockhost.db")}}))  # never /var/lib
    assert main(["--config", str(config), "template", "build"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first == {"vmid": 9100, "node": "pve2", "action": "created"}
    assert main(["--config", str(config), "template", "build"]) == 0
    assert json.loads(capsys.readouterr().out)["action"] == "exists"
    # a user error: one line, exit 1, no traceback
    assert main(["--config", str(config), "template", "build", "--image", "x.qcow2"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cloud image must be" in err
    assert sim.token_secret not in err
