"""Terraform's own type checking of every attribute-mode field we render, and (opt-in) the
real provider's ``terraform validate``.

bpg/proxmox declares ``network_device`` with ``ConfigMode: SchemaConfigModeAttr``: in JSON
syntax Terraform reads it as a value of the attribute's exact type, so every object must carry
all 11 fields (null where unset). The provider cannot be downloaded here, so each rendered value
goes to the local ``terraform`` binary through a root-module variable of the provider's exact
type, and ``terraform plan`` (no provider, no resources) type-checks it: a missing or mistyped
field fails the way ``terraform plan`` with the provider does ("element 0: attributes ... are
required"). The provider's validators are covered by ``bpg_proxmox.schema.json``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from provisioner.terraform.inherit import inherited_from
from provisioner.terraform.layout import write_main
from provisioner.terraform.render import PROVIDER_VERSION, render_vm, to_json_bytes
from provisioner.terraform.runner import TerraformRunner
from provisioner.terraform.schema import annotated_paths
from tests.provisioner.terraform.pve_configs import (
    TEMPLATE,
    TUNED_TEMPLATE_CONFIG,
    live_config,
)
from tests.provisioner.terraform.test_terraform_render import SETTINGS, make_spec

needs_terraform = pytest.mark.skipif(shutil.which("terraform") is None,
                                     reason="the `terraform` binary is not on PATH")

#: network_device's exact type, read from proxmoxtf/resource/vm/network/schema.go at v0.111.1
#: (TypeString -> string, TypeBool -> bool, TypeInt / TypeFloat -> number).
NETWORK_DEVICE_TYPE = (
    "list(object({bridge=string, disconnected=bool, enabled=bool, firewall=bool, "
    "mac_address=string, model=string, mtu=number, queues=number, rate_limit=number, "
    "trunks=string, vlan_id=number}))")
#: Every attribute-mode field we emit, by its name in the VM resource.
PROVIDER_ATTRIBUTE_TYPES = {"network_device": NETWORK_DEVICE_TYPE}
VM_PATH = "resource.proxmox_virtual_environment_vm.vm"
TUNED = inherited_from(TUNED_TEMPLATE_CONFIG, disk_interface="scsi0", live=False)
LIVE = inherited_from(live_config(), disk_interface="scsi0", live=True)


def rendered_variants() -> dict[str, dict[str, Any]]:
    """Documents as the backend renders them: clones, an adoption, without user data."""
    spec = make_spec()
    return {
        "clone": render_vm(spec, SETTINGS, inherited=TEMPLATE),
        "clone_of_tuned_template": render_vm(spec, SETTINGS, inherited=TUNED),
        "linked_clone": render_vm(replace(spec, full_clone=False), SETTINGS, inherited=TUNED),
        "adopt": render_vm(spec, SETTINGS, inherited=LIVE, adopt=True),
        "adopt_with_ipset": render_vm(spec, SETTINGS, inherited=LIVE, adopt=True,
                                      adopt_ipset=True),
        "user_account": render_vm(replace(spec, user_data=None), SETTINGS, inherited=TEMPLATE),
    }


def at_path(doc: dict[str, Any], path: str) -> Any:
    node: Any = doc
    for part in path.split("."):
        node = node[part]
    return node


def attribute_mode_fields() -> dict[str, str]:
    """The schema's attribute-mode fields of the VM: name -> its recorded Terraform type."""
    modes = annotated_paths("x-mode")
    types = annotated_paths("x-tf-type")
    return {path.removeprefix(VM_PATH + "."): types[path]
            for path, mode in modes.items() if mode == "attribute"}


def terraform_plan(directory: Path, variables: dict[str, tuple[str, Any]]) -> tuple[int, str]:
    """``terraform plan`` of a root module declaring ``variables`` (name -> (type, value)),
    the values given in ``terraform.tfvars.json``; returns (exit status, output)."""
    directory.mkdir(parents=True, exist_ok=True)
    module = {"variable": {name: {"type": tf_type} for name, (tf_type, _) in variables.items()}}
    (directory / "main.tf.json").write_bytes(to_json_bytes(module))
    values = {name: value for name, (_, value) in variables.items()}
    (directory / "terraform.tfvars.json").write_text(json.dumps(values), encoding="utf-8")
    env = {**os.environ, "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1"}
    proc = subprocess.run(["terraform", "plan", "-input=false", "-no-color", "-lock=false"],
                          cwd=directory, env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    return proc.returncode, " ".join((proc.stdout + proc.stderr).split())


def test_the_schema_records_the_provider_types_of_its_attribute_mode_fields() -> None:
    assert attribute_mode_fields() == PROVIDER_ATTRIBUTE_TYPES
    device = at_path(rendered_variants()["clone"], VM_PATH + ".network_device")[0]
    assert sorted(device) == re.findall(r"(\w+)=", NETWORK_DEVICE_TYPE)  # all 11 fields


@needs_terraform
@pytest.mark.parametrize("variant", sorted(rendered_variants()))
def test_terraform_accepts_every_rendered_attribute_mode_value(variant: str,
                                                               tmp_path: Path) -> None:
    doc = rendered_variants()[variant]
    variables = {name: (tf_type, at_path(doc, f"{VM_PATH}.{name}"))
                 for name, tf_type in PROVIDER_ATTRIBUTE_TYPES.items()}
    status, output = terraform_plan(tmp_path, variables)
    assert status == 0, output
    assert "No changes" in output


@needs_terraform
@pytest.mark.parametrize(("what", "value", "message"), [
    ("the old rendering: bridge and model only", [{"bridge": "vmbr0", "model": "virtio"}],
     'element 0: attributes "disconnected", "enabled", "firewall", "mac_address", "mtu", '
     '"queues", "rate_limit", "trunks", and "vlan_id" are required'),
    ("a mistyped field", None, "a number is required"),
])
def test_terraform_rejects_what_the_provider_would(what: str, value: Any, message: str,
                                                   tmp_path: Path) -> None:
    """Negative controls: the check bites exactly like ``terraform plan`` with the provider."""
    if value is None:
        value = at_path(rendered_variants()["clone"], VM_PATH + ".network_device")
        value = [{**value[0], "mtu": "jumbo"}]
    status, output = terraform_plan(tmp_path, {"network_device": (NETWORK_DEVICE_TYPE, value)})
    assert status != 0, what
    assert message in output, output


# ----------------------------------------------------------------------------- opt-in


def provider_unreachable() -> str | None:
    """Why the pinned provider cannot be installed here (None: it can, from a plugin cache or
    a mirror configured through TF_CLI_CONFIG_FILE)."""
    wanted = f"registry.terraform.io/bpg/proxmox/{PROVIDER_VERSION}"
    cache = os.environ.get("TF_PLUGIN_CACHE_DIR")
    if cache and (Path(cache) / wanted).is_dir():
        return None
    cli_config = os.environ.get("TF_CLI_CONFIG_FILE")
    if cli_config and Path(cli_config).is_file():
        text = Path(cli_config).read_text(encoding="utf-8", errors="replace")
        if re.search(r"provider_installation|plugin_cache_dir", text):
            return None
    return (f"bpg/proxmox {PROVIDER_VERSION} is not reachable: put it in TF_PLUGIN_CACHE_DIR "
            f"({wanted}) or configure a mirror in the file TF_CLI_CONFIG_FILE names "
            f"(now {cli_config or 'unset'}) to run terraform init && terraform validate")


@needs_terraform
@pytest.mark.skipif(provider_unreachable() is not None, reason=str(provider_unreachable()))
@pytest.mark.parametrize("variant", ["clone", "adopt", "user_account"])
def test_the_real_provider_validates_rendered_directories(variant: str,
                                                          tmp_path: Path) -> None:
    write_main(tmp_path, to_json_bytes(rendered_variants()[variant]))
    runner = TerraformRunner(lock_timeout_s=30)
    runner.init(tmp_path)
    proc = subprocess.run(["terraform", "validate", "-json", "-no-color"], cwd=tmp_path,
                          env=runner.environment(), capture_output=True, text=True,
                          timeout=300, check=False)
    result = json.loads(proc.stdout)
    assert result["valid"] is True, result["diagnostics"]
