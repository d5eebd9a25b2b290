"""No VM is replaced behind our back: adopting a VM (``vm export-tf``) and changing its
user-data plan in-place updates, never a destroy + create.

Terraform replaces a resource when a ForceNew attribute changes - or is *unknown* at plan time.
The VM's ForceNew attributes (``x-force-new`` in ``bpg_proxmox.schema.json``, read from the
provider's source at v0.111.1) are node_name, vm_id, the clone block (in ``ignore_changes``) and
``initialization.user_data_file_id``. The old rendering set the latter to
``${proxmox_virtual_environment_file.user_data.id}``: unknown whenever the snippet is created
(the first apply after an export, which imports only the VM) or replaced (any user-data change:
``source_raw`` is ForceNew on the file), so Terraform replaced the VM.

What these tests prove, without the provider (it cannot be downloaded here):

* the renderer's guarantees - a re-render, the adopt path and a user-data change give identical
  values at every ForceNew path of the VM; the snippet id is a literal equal to the id the file
  resource gets and to what PVE's ``cicustom`` of an API-created VM says;
* Terraform's own planning of those values: a provider-free stand-in (``terraform_data`` per
  resource, its ``triggers_replace`` = the resource's ForceNew attributes, the file's computed
  ``id`` = the stand-in's id, unknown until created) is applied and re-planned by the real
  ``terraform`` binary, which plans no replacement of the VM (and does plan one with the old
  rendering's reference).

What only a real provider run against PVE would prove: that the provider reads back exactly
these values (node, vmid, the ``cicustom`` user volume) on import and refresh, that its
CustomizeDiff adds no other replacement, and that the non-ForceNew attributes we state plan
no update (e.g. ``cpu``/``memory`` equal to what it reads, so no reboot on adoption).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from provisioner.proxmox.snippets import SnippetStore
from provisioner.terraform.inherit import Inherited, inherited_from
from provisioner.terraform.layout import write_main
from provisioner.terraform.render import (
    FILE_RESOURCE,
    VM_RESOURCE,
    render_vm,
    to_json_bytes,
)
from provisioner.terraform.runner import TerraformRunner
from provisioner.terraform.schema import annotated_paths
from tests.provisioner.terraform.pve_configs import TEMPLATE, live_config
from tests.provisioner.terraform.test_terraform_render import SETTINGS, make_spec

needs_terraform = pytest.mark.skipif(shutil.which("terraform") is None,
                                     reason="the `terraform` binary is not on PATH")
LIVE = inherited_from(live_config(), disk_interface="scsi0", live=True)
VM_PREFIX = f"resource.{VM_RESOURCE}.vm."
FILE_PREFIX = f"resource.{FILE_RESOURCE}.user_data."


def force_new(resource: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The resource's values at its ForceNew paths, minus those in ``ignore_changes``."""
    ignored = set(resource.get("lifecycle", {}).get("ignore_changes", []))
    out: dict[str, Any] = {}
    for path in annotated_paths("x-force-new"):
        if not path.startswith(prefix) or path[len(prefix):].split(".")[0] in ignored:
            continue
        node: Any = resource
        for part in path[len(prefix):].split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            out[path[len(prefix):]] = node
    return out


def vm_force_new(doc: dict[str, Any]) -> dict[str, Any]:
    return force_new(doc["resource"][VM_RESOURCE]["vm"], VM_PREFIX)


def stand_in(doc: dict[str, Any], *, with_file: bool = True) -> bytes:
    """The provider-free model of ``doc`` (see the module docstring). Strings are already
    escaped by the renderer, so the document is serialized as is."""
    resources: dict[str, Any] = {}
    file = doc["resource"].get(FILE_RESOURCE, {}).get("user_data")
    if file is not None and with_file:
        resources["user_data"] = {"triggers_replace": force_new(file, FILE_PREFIX)}
    vm = doc["resource"][VM_RESOURCE]["vm"]
    resources["vm"] = {"triggers_replace": vm_force_new(doc)}
    if "depends_on" in vm and with_file:
        resources["vm"]["depends_on"] = ["terraform_data.user_data"]
    model = {"terraform": {"required_version": ">= 1.5.0"},
             "resource": {"terraform_data": resources}}
    text = to_json_bytes(model).decode()
    return text.replace(f"{FILE_RESOURCE}.", "terraform_data.").encode()


def imported(kept: Inherited, node: str, vmid: int) -> dict[str, Any]:
    """What the provider reads on import of an existing VM, at the VM's ForceNew paths."""
    values: dict[str, Any] = {"node_name": node, "vm_id": vmid}
    if kept.user_data_volume is not None:
        values["initialization.user_data_file_id"] = kept.user_data_volume
    return values


def planned_actions(runner: TerraformRunner, directory: Path) -> dict[str, str]:
    """``terraform plan``: address -> action for every resource that would change."""
    result = runner.run(directory, ["plan", "-input=false", "-no-color", "-lock=false", "-json"],
                        json_lines=True)
    assert result.returncode == 0, result.errors()
    return {m["change"]["resource"]["addr"]: m["change"]["action"]
            for m in result.messages if m.get("type") == "planned_change"}


@pytest.fixture
def runner(tmp_path: Path) -> TerraformRunner:
    return TerraformRunner(plugin_cache_dir=tmp_path / "plugin-cache", lock_timeout_s=5)


# ----------------------------------------------------------------------------- the renderer


def test_re_render_adopt_and_user_data_change_keep_every_force_new_value() -> None:
    spec = make_spec()
    clone = vm_force_new(render_vm(spec, SETTINGS, inherited=TEMPLATE))
    assert set(clone) == {"node_name", "vm_id", "initialization.user_data_file_id"}
    renders = [render_vm(spec, SETTINGS, inherited=LIVE, adopt=True),  # vm export-tf
               render_vm(spec, SETTINGS, inherited=LIVE),  # re-render of the existing VM
               render_vm(replace(spec, user_data="#cloud-config\nhostname: changed\n"),
                         SETTINGS, inherited=LIVE),
               render_vm(spec, SETTINGS, inherited=TEMPLATE, started=False)]
    for doc in renders:
        assert vm_force_new(doc) == clone


def test_the_user_data_id_is_a_literal_equal_to_the_file_id_and_to_cicustom(
        tmp_path: Path) -> None:
    doc = render_vm(make_spec(), SETTINGS, inherited=TEMPLATE)
    vm = doc["resource"][VM_RESOURCE]["vm"]
    file = doc["resource"][FILE_RESOURCE]["user_data"]
    file_id = vm["initialization"]["user_data_file_id"]
    assert "${" not in json.dumps(vm)  # nothing in the VM is unknown at plan time
    # file.go: the resource id is <datastore_id>:<content_type>/<file_name>
    assert file_id == (f"{file['datastore_id']}:{file['content_type']}/"
                       f"{file['source_raw']['file_name']}")
    # what the provider reads back from a VM the API backend configured
    cicustom = SnippetStore(tmp_path, SETTINGS.snippets_datastore).cicustom("blockhost-42")
    assert cicustom == f"user={file_id}" and LIVE.user_data_volume == file_id
    assert vm["depends_on"] == [f"{FILE_RESOURCE}.user_data"]  # uploaded before use


# ----------------------------------------------------------------------------- terraform


@needs_terraform
def test_terraform_plans_no_vm_replacement_when_user_data_changes(
        runner: TerraformRunner, tmp_path: Path) -> None:
    directory = tmp_path / "blockhost-42"
    write_main(directory, stand_in(render_vm(make_spec(), SETTINGS, inherited=TEMPLATE)))
    runner.ensure_init(directory)
    runner.apply(directory)
    changed = replace(make_spec(), user_data="#cloud-config\nhostname: changed\n")
    write_main(directory, stand_in(render_vm(changed, SETTINGS, inherited=LIVE)))
    actions = planned_actions(runner, directory)
    assert actions == {"terraform_data.user_data": "replace"}  # the file: source_raw is ForceNew


@needs_terraform
def test_terraform_plans_no_vm_replacement_on_the_first_apply_after_export(
        runner: TerraformRunner, tmp_path: Path) -> None:
    """The state after ``import``: the VM only, as the provider reads it from the VM the API
    backend made; the snippet resource does not exist yet."""
    directory = tmp_path / "blockhost-42"
    state = {"terraform": {"required_version": ">= 1.5.0"}, "resource": {"terraform_data": {
        "vm": {"triggers_replace": imported(LIVE, "pve1", 4200)}}}}
    write_main(directory, to_json_bytes(state))
    runner.ensure_init(directory)
    runner.apply(directory)
    adopt = render_vm(make_spec(), SETTINGS, inherited=LIVE, adopt=True)
    write_main(directory, stand_in(adopt))
    assert planned_actions(runner, directory) == {"terraform_data.user_data": "create"}


@needs_terraform
def test_the_stand_in_catches_the_old_reference(runner: TerraformRunner,
                                                tmp_path: Path) -> None:
    """Negative control: with the old ``${...file.user_data.id}`` the same plan replaces the
    VM, so the tests above would see a regression."""
    directory = tmp_path / "blockhost-42"
    doc = render_vm(make_spec(), SETTINGS, inherited=TEMPLATE)
    init = doc["resource"][VM_RESOURCE]["vm"]["initialization"]
    init["user_data_file_id"] = f"${{{FILE_RESOURCE}.user_data.id}}"
    write_main(directory, stand_in(doc))
    runner.ensure_init(directory)
    runner.apply(directory)
    doc["resource"][FILE_RESOURCE]["user_data"]["source_raw"]["data"] = "#cloud-config\n"
    write_main(directory, stand_in(doc))
    assert planned_actions(runner, directory) == {"terraform_data.user_data": "replace",
                                                  "terraform_data.vm": "replace"}
