"""TerraformBackend against the real PVE simulator over HTTPS.

The bpg provider cannot be downloaded here, so a real ``terraform apply`` against PVE cannot
run. What is tested: every ownership decision is taken through the Proxmox API *before*
Terraform would run (the runner points at a binary that does not exist, so any attempt to
run Terraform surfaces as TerraformNotInstalled instead of the expected outcome), the
rendered directory, export/adoption of an existing VM, and the wiring + CLI.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from provisioner.backend import VMBackend, VMSpec, marker_for
from provisioner.errors import AlreadyExists, NotFound, OwnershipMismatch
from provisioner.proxmox.backend import ProxmoxAPIBackend
from provisioner.proxmox.firewall import TenantFirewall
from provisioner.pvesim.launcher import PveSim
from provisioner.terraform.backend import TerraformBackend, build_terraform_backend
from provisioner.terraform.export import export_vm
from provisioner.terraform.firewall_blocks import IPSET_ADDRESS
from provisioner.terraform.inherit import disk_gb
from provisioner.terraform.render import MAIN_FILE, VM_RESOURCE
from provisioner.terraform.runner import TerraformError, TerraformNotInstalled
from provisioner.terraform.schema import validate
from tests.support.pve import StartSim, api_backend


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """`blockhost` main() points structlog at the (captured) stderr, which pytest closes
    after the test: start and end with structlog's defaults."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="module")
def sim(module_sims: StartSim) -> PveSim:
    """Pool-scoped token (the production setup), real snippets storage, quick clones."""
    return module_sims(snippets=True, clone_seconds=0.05)


@pytest.fixture
def api(sim: PveSim) -> ProxmoxAPIBackend:
    sim.reset()
    return api_backend(sim, poll_interval=0.02, task_timeout=20, timeout=10)


@pytest.fixture
def backend(api: ProxmoxAPIBackend, tmp_path: Path) -> TerraformBackend:
    tf = build_terraform_backend(api, token_secret=api._token_secret,
                                 root=tmp_path / "terraform")
    tf.runner.binary = "terraform-not-installed-here"  # any terraform run would fail loudly
    return tf


def make_spec(vmid: int = 200, sub: int = 42, **kw: Any) -> VMSpec:
    base = VMSpec(
        name=f"blockhost-{sub}", vmid=vmid, node="pve2", template_vmid=9001, cores=2,
        memory_mb=3072, disk_gb=20, ipv4_cidr="10.10.0.20/24", gateway4="10.10.0.1",
        ipv6_cidr=None, gateway6=None, bridge="vmbr0", pool="blockhost",
        tags=("blockhost", f"sub-{sub}"), subscription_id=sub, username="alice",
        user_data="#cloud-config\nhostname: x\n")
    return replace(base, **kw)


def test_backend_satisfies_the_protocol(backend: TerraformBackend) -> None:
    assert isinstance(backend, VMBackend)


def test_create_refuses_a_foreign_vmid_before_terraform_runs(sim: PveSim,
                                                             backend: TerraformBackend) -> None:
    sim.create_vm(vmid=200, name="blockhost-42", pool="blockhost", tags="blockhost;sub-7",
                  description=marker_for(7, "blockhost-42"))
    before = sim.vm(200)
    with pytest.raises(AlreadyExists) as info:  # VmidTaken where the tree defines it
        backend.create(make_spec(vmid=200))
    assert "sub=7" in str(info.value)
    assert sim.vm(200) == before
    assert not (backend.directory("blockhost-42") / MAIN_FILE).exists()


def test_create_renders_the_directory_then_needs_terraform(backend: TerraformBackend,
                                                           sim: PveSim) -> None:
    with pytest.raises(TerraformNotInstalled) as info:
        backend.create(make_spec(vmid=201))
    assert "install Terraform" in str(info.value)
    doc = json.loads((backend.directory("blockhost-42") / MAIN_FILE).read_text())
    assert validate(doc) == []
    vm = doc["resource"][VM_RESOURCE]["vm"]
    assert vm["vm_id"] == 201 and vm["node_name"] == "pve2" and "import" not in doc
    tpl_node = sim.vm(9001)["node"]
    assert vm["clone"].get("node_name", "pve2") == tpl_node
    assert sim.vm(201) is None


def test_create_adopts_a_vm_the_state_forgot_with_its_ipset(api: ProxmoxAPIBackend,
                                                            backend: TerraformBackend,
                                                            sim: PveSim) -> None:
    """The restore day under Terraform: our VM exists (with its firewall) and the state is
    gone; the rendered directory imports both the VM and its IP set."""
    ref = api.create(make_spec(vmid=212, user_data=None))
    assert TenantFirewall(api).has_ipset(ref.node, 212)
    with pytest.raises(TerraformNotInstalled):
        backend.create(make_spec(vmid=212, user_data=None))
    doc = json.loads((backend.directory("blockhost-42") / MAIN_FILE).read_text())
    assert validate(doc) == []
    assert doc["import"] == [{"to": f"{VM_RESOURCE}.vm", "id": f"{ref.node}/212"},
                             {"to": IPSET_ADDRESS, "id": f"vm/{ref.node}/212/ipfilter-net0"}]
    TenantFirewall(api).remove(ref.node, 212)  # a VM from before the firewall: nothing to import
    with pytest.raises(TerraformNotInstalled):
        backend.create(make_spec(vmid=212, user_data=None))
    doc = json.loads((backend.directory("blockhost-42") / MAIN_FILE).read_text())
    assert doc["import"] == [{"to": f"{VM_RESOURCE}.vm", "id": f"{ref.node}/212"}]
    assert IPSET_ADDRESS.split(".")[0] in doc["resource"]  # created by the apply instead


def test_destroy_refuses_a_vm_whose_markers_do_not_match(sim: PveSim, api: ProxmoxAPIBackend,
                                                         backend: TerraformBackend) -> None:
    ref = api.create(make_spec(vmid=202, user_data=None))
    wrong_uuid = replace(ref, smbios_uuid="00000000-0000-0000-0000-000000000000")
    for bad in (wrong_uuid, replace(ref, subscription_id=43), replace(ref, name="blockhost-9")):
        with pytest.raises(OwnershipMismatch):
            backend.destroy(bad)
    sim.create_vm(vmid=203, name="blockhost-42", status="running")  # foreign, out of pool
    with pytest.raises(NotFound):  # invisible to the pool token = not ours
        backend.stop(replace(ref, vmid=203))
    assert sim.vm(202)["status"] == "running" and sim.vm(203) is not None


def test_destroy_of_our_vm_unknown_to_terraform_uses_the_api(api: ProxmoxAPIBackend,
                                                             backend: TerraformBackend,
                                                             sim: PveSim) -> None:
    ref = api.create(make_spec(vmid=204, user_data=None))
    with pytest.raises(TerraformError, match="not managed by Terraform"):
        backend.stop(ref)
    backend.destroy(ref)  # all markers match; no state in its directory
    assert sim.vm(204) is None
    backend.destroy(ref)  # already gone = success, Terraform never asked
    assert not backend.directory(ref.name).exists()
    assert list((backend.root / ".archive").iterdir())


def test_export_writes_an_adoptable_directory_from_the_live_vm(api: ProxmoxAPIBackend,
                                                               backend: TerraformBackend,
                                                               sim: PveSim) -> None:
    ref = api.create(make_spec(vmid=205, cores=3, memory_mb=1024, disk_gb=12, user_data=None))
    stale = make_spec(vmid=205, cores=1, memory_mb=512, disk_gb=1, node="pve1", user_data=None)
    directory = export_vm(backend, stale, ref)
    doc = json.loads((directory / MAIN_FILE).read_text())
    assert validate(doc) == []
    vm = doc["resource"][VM_RESOURCE]["vm"]
    # made by the API backend, it has its IP set: imported too, never created again
    assert doc["import"] == [{"to": f"{VM_RESOURCE}.vm", "id": f"{ref.node}/205"},
                             {"to": IPSET_ADDRESS, "id": f"vm/{ref.node}/205/ipfilter-net0"}]
    assert (vm["cpu"]["cores"], vm["memory"]["dedicated"]) == (3, 1024)  # live, not stale
    assert vm["node_name"] == ref.node and vm["started"] is True
    assert vm["disk"][0]["size"] >= 12
    assert vm["lifecycle"]["ignore_changes"] == ["clone"]

    sim.create_vm(vmid=206, name="blockhost-42", status="running", pool="blockhost",
                  tags="blockhost;sub-42")  # no description marker
    with pytest.raises(OwnershipMismatch):
        export_vm(backend, stale, replace(ref, vmid=206, smbios_uuid=None),
                  out_dir=backend.root / "other")
    assert not (backend.root / "other" / MAIN_FILE).exists()


def test_disk_size_parsing() -> None:
    assert disk_gb("local-lvm:vm-1-disk-0,size=8G") == 8
    assert disk_gb("local:1/x.raw,cache=none,size=512M") == 1
    assert disk_gb("x,size=1T") == 1024
    assert disk_gb("x,iothread=1") is None


def test_cli_export_tf_and_wiring(sim: PveSim, api: ProxmoxAPIBackend, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    from listener.chain.journal import Store
    from listener.cli.main import main
    from listener.config import load_config
    from listener.runtime.wiring import build_backend, pools_from_config
    from provisioner.inventory import Inventory

    secret_file = tmp_path / "pve-token"
    secret_file.write_text(sim.token_secret)
    os.chmod(secret_file, 0o600)
    cfg_path = tmp_path / "blockhost.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "db": {"path": str(tmp_path / "db.sqlite")},
        "proxmox": {"backend": "terraform", "api_url": sim.url, "token_id": sim.token_id,
                    "token_secret_file": str(secret_file), "verify_ssl": str(sim.ca_path),
                    "pool": "blockhost", "terraform_dir": str(tmp_path / "tf"),
                    "snippets_dir": None},
        "network": {"ip_pool": {"network": "10.10.0.0/24", "start": "10.10.0.20",
                                "end": "10.10.0.30", "gateway": "10.10.0.1"},
                    "vmid_range": {"start": 300, "end": 310}},
    }))
    config = load_config(cfg_path)
    built = build_backend(config) if _has_terraform() else None
    if built is not None:
        assert isinstance(built, TerraformBackend)
        assert built.root == tmp_path / "tf" and built.api.pool == "blockhost"
        assert built.settings.insecure is False

    store = Store.open(config.db.path)
    try:
        inv = Inventory(store.conn)
        record = inv.reserve("blockhost-42", pools=pools_from_config(config), node="pve2",
                             subscription_id=42)
        ref = api.create(make_spec(vmid=record.vmid, user_data=None,
                                   ipv4_cidr=f"{record.ipv4}/24"))
        inv.set_state(record.id, "running", smbios_uuid=ref.smbios_uuid)
    finally:
        store.close()
    if not _has_terraform():
        pytest.skip("terraform not on PATH: build_backend refuses the terraform backend")
    out_dir = tmp_path / "adopt"
    capsys.readouterr()
    assert main(["--config", str(cfg_path), "vm", "export-tf", "blockhost-42",
                 "--out", str(out_dir)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out_dir)
    doc = json.loads((out_dir / MAIN_FILE).read_text())
    assert validate(doc) == [] and doc["import"][0]["id"] == f"pve2/{record.vmid}"
    assert sim.token_secret not in (out_dir / MAIN_FILE).read_text()

    assert main(["--config", str(cfg_path), "vm", "export-tf", "no-such-vm"]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]  # logs go to stderr before it
    assert last.startswith("blockhost: error: no created VM named 'no-such-vm'")


def _has_terraform() -> bool:
    import shutil

    return shutil.which("terraform") is not None


def test_create_renders_a_clone_with_the_templates_choices(backend: TerraformBackend,
                                                           sim: PveSim) -> None:
    """The template's own settings, read through the API, are stated in the file, so the
    provider's defaults (qemu64, no balloon, local-lvm) never overwrite them on clone."""
    with pytest.raises(TerraformNotInstalled):
        backend.create(make_spec(vmid=210))
    vm = json.loads((backend.directory("blockhost-42") / MAIN_FILE).read_text()
                    )["resource"][VM_RESOURCE]["vm"]
    template = sim.vm(9001)["config"]
    storage = template["ide2"].split(":")[0]
    assert vm["cpu"]["type"] == "kvm64" and vm["memory"] == {"dedicated": 3072,
                                                             "floating": 3072}
    assert vm["initialization"]["datastore_id"] == storage
    assert vm["disk"][0]["datastore_id"] == template["scsi0"].split(":")[0]


def test_create_over_an_existing_vm_renders_it_as_it_is(api: ProxmoxAPIBackend,
                                                        backend: TerraformBackend) -> None:
    """An existing VM of ours (a crash between clone and state) is imported as it is: on its
    own node, with what the provider reads back from it."""
    ref = api.create(make_spec(vmid=211, user_data=None))
    with pytest.raises(TerraformNotInstalled):
        backend.create(make_spec(vmid=211, user_data=None, node="pve1"))
    doc = json.loads((backend.directory("blockhost-42") / MAIN_FILE).read_text())
    vm = doc["resource"][VM_RESOURCE]["vm"]
    assert doc["import"][0]["id"] == f"{ref.node}/211" and vm["node_name"] == ref.node
    assert vm["cpu"]["type"] == "qemu64" and vm["memory"]["floating"] == 0
    assert validate(doc) == []


def test_export_references_only_the_snippet_the_vm_already_uses(sim: PveSim,
                                                                 api: ProxmoxAPIBackend,
                                                                 backend: TerraformBackend
                                                                 ) -> None:
    """``user_data_file_id`` is ForceNew: the export states it only when it equals the VM's
    own ``cicustom`` (then the first apply replaces nothing), else leaves user data out."""
    with_snippets = api_backend(sim, snippets_dir=sim.snippets_dir, poll_interval=0.02,
                                task_timeout=20, timeout=10)
    ref = with_snippets.create(make_spec(vmid=212))
    directory = export_vm(backend, make_spec(vmid=212), ref, out_dir=backend.root / "a")
    doc = json.loads((directory / MAIN_FILE).read_text())
    cicustom = str(api.get_object(f"nodes/{ref.node}/qemu/212/config")["cicustom"])
    init = doc["resource"][VM_RESOURCE]["vm"]["initialization"]
    assert cicustom == f"user={init['user_data_file_id']}"
    assert "proxmox_virtual_environment_file" in doc["resource"]

    plain = api.create(make_spec(vmid=213, sub=43, user_data=None))
    directory = export_vm(backend, make_spec(vmid=213, sub=43), plain,
                          out_dir=backend.root / "b")
    doc = json.loads((directory / MAIN_FILE).read_text())
    init = doc["resource"][VM_RESOURCE]["vm"]["initialization"]
    assert "user_data_file_id" not in init and init["user_account"] == {"username": "alice"}
    assert "proxmox_virtual_environment_file" not in doc["resource"] and validate(doc) == []
