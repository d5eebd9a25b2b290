"""A clone never silently changes its template's choices, an adoption never changes the VM,
and no rendered value lies outside bpg/proxmox 0.111.1's validators.

On clone the provider writes the cpu and memory blocks, the boot disk, net0 and the cloud-init
drive whole, filling what the file leaves out with its defaults (vm.go: ``cpu.type = qemu64``,
``memory.floating = 0``; disk/schema.go and vm.go: ``datastore_id = local-lvm``), so every
such attribute must be rendered, from the template (a clone) or the VM itself (an adoption).
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import pytest

from provisioner.terraform.inherit import inherited_from, property_string
from provisioner.terraform.render import render_vm
from provisioner.terraform.schema import validate
from tests.provisioner.terraform.pve_configs import (
    TEMPLATE,
    TEMPLATE_CONFIG,
    TUNED_TEMPLATE_CONFIG,
    live_config,
)
from tests.provisioner.terraform.test_terraform_render import SETTINGS, make_spec, vm_of

TUNED = inherited_from(TUNED_TEMPLATE_CONFIG, disk_interface="scsi0", live=False)


def live(**config: Any) -> Any:
    return inherited_from(live_config(**config), disk_interface="scsi0", live=True)


def test_a_clone_of_our_template_states_what_pve_means_by_its_unset_options() -> None:
    vm = vm_of(render_vm(make_spec(), SETTINGS, inherited=TEMPLATE))
    assert vm["cpu"] == {"cores": 2, "type": "kvm64", "flags": [], "sockets": 1, "numa": False}
    assert vm["memory"] == {"dedicated": 2048, "floating": 2048}  # PVE: unset balloon = memory
    assert vm["disk"] == [{"interface": "scsi0", "datastore_id": "local-lvm", "size": 20}]
    assert vm["initialization"]["datastore_id"] == "local-lvm"  # the template's drive
    device = vm["network_device"][0]
    assert (device["bridge"], device["model"], device["firewall"], device["vlan_id"]) == \
        ("vmbr0", "virtio", True, 0)  # the firewall is always on (tenant isolation)
    assert device["mac_address"] is None and device["enabled"] is None


def test_a_clone_keeps_a_tuned_templates_choices() -> None:
    vm = vm_of(render_vm(make_spec(bridge="vmbr9"), SETTINGS, inherited=TUNED))
    assert vm["cpu"] == {"cores": 2, "type": "x86-64-v2-AES", "flags": ["+aes", "-pcid"],
                         "sockets": 2, "numa": True, "units": 200}
    assert vm["memory"] == {"dedicated": 2048, "floating": 1024}
    assert vm["disk"][0] == {"interface": "scsi0", "datastore_id": "local-lvm", "size": 20,
                             "discard": "on", "ssd": True}  # full clone onto spec.storage
    assert vm["initialization"]["datastore_id"] == "cephfs"
    device = vm["network_device"][0]
    assert {k: device[k] for k in ("bridge", "model", "firewall", "vlan_id", "mtu")} == \
        {"bridge": "vmbr9", "model": "e1000", "firewall": True, "vlan_id": 30, "mtu": 1450}


@pytest.mark.parametrize(("spec_changes", "datastore"), [
    ({"full_clone": False}, "ceph"),  # a linked clone's disk cannot move
    ({"storage": None}, "ceph"),  # no target storage: where the template keeps it
    ({"storage": "fast"}, "fast"),  # a full clone lands on its target
])
def test_the_boot_disk_is_never_left_to_the_local_lvm_default(spec_changes: dict[str, Any],
                                                              datastore: str) -> None:
    vm = vm_of(render_vm(make_spec(**spec_changes), SETTINGS, inherited=TUNED))
    assert vm["disk"][0]["datastore_id"] == datastore
    assert vm["initialization"]["datastore_id"] == "cephfs"


def test_the_boot_disk_is_never_shrunk_below_the_templates() -> None:
    vm = vm_of(render_vm(make_spec(disk_gb=5), SETTINGS, inherited=TUNED))
    assert vm["disk"][0]["size"] == 10


def test_an_adopted_vm_is_rendered_as_the_provider_reads_it() -> None:
    """No cpu type and no balloon on the VM: the provider reads qemu64 and 0, so rendering
    those plans no change (no reboot); once the size changes the block is written anyway,
    and then as PVE means the unset options."""
    vm = vm_of(render_vm(make_spec(), SETTINGS, inherited=live(), adopt=True))
    assert vm["cpu"]["type"] == "qemu64" and vm["memory"]["floating"] == 0
    assert vm["disk"][0]["datastore_id"] == "local-lvm"
    resized = vm_of(render_vm(make_spec(cores=4, memory_mb=4096), SETTINGS, inherited=live()))
    assert resized["cpu"]["type"] == "kvm64" and resized["memory"]["floating"] == 4096
    kept = live(balloon=3072, cpu="host", scsi0="nvme:vm-4200-disk-0,size=40G")
    smaller = vm_of(render_vm(make_spec(memory_mb=1024), SETTINGS, inherited=kept))
    assert smaller["memory"]["floating"] == 1024  # never above dedicated
    assert smaller["cpu"]["type"] == "host"
    assert smaller["disk"][0] == {"interface": "scsi0", "datastore_id": "nvme", "size": 40}


def test_without_a_cloudinit_drive_the_configured_datastore_is_used() -> None:
    bare = {k: v for k, v in TEMPLATE_CONFIG.items() if k != "ide2"}
    kept = inherited_from(bare, disk_interface="scsi0", live=False)
    with_setting = replace(SETTINGS, cloudinit_datastore="ci-store")
    assert vm_of(render_vm(make_spec(), with_setting, inherited=kept)
                 )["initialization"]["datastore_id"] == "ci-store"
    assert vm_of(render_vm(make_spec(), SETTINGS, inherited=kept)
                 )["initialization"]["datastore_id"] == "local-lvm"  # spec.storage
    with pytest.raises(ValueError, match="cloud-init drive"):
        render_vm(make_spec(storage=None), SETTINGS, inherited=kept)


def test_a_source_without_the_boot_disk_or_with_a_foreign_cpu_type_is_refused() -> None:
    with pytest.raises(ValueError, match="boot disk virtio0"):
        inherited_from(TEMPLATE_CONFIG, disk_interface="virtio0", live=False)
    unknown = inherited_from({**TEMPLATE_CONFIG, "cpu": "EPYC-Turin"}, disk_interface="scsi0",
                             live=False)
    with pytest.raises(ValueError, match="EPYC-Turin"):
        render_vm(make_spec(), SETTINGS, inherited=unknown)
    custom = inherited_from({**TEMPLATE_CONFIG, "cpu": "custom-mine"}, disk_interface="scsi0",
                            live=False)
    assert vm_of(render_vm(make_spec(), SETTINGS, inherited=custom))["cpu"]["type"] == \
        "custom-mine"


@pytest.mark.parametrize(("changes", "ok"), [
    ({"memory_mb": 63}, False), ({"memory_mb": 64}, True), ({"memory_mb": 268435456}, True),
    ({"memory_mb": 268435457}, False), ({"cores": 2304}, True), ({"cores": 2305}, False),
])
def test_sizes_follow_the_providers_validators(changes: dict[str, int], ok: bool) -> None:
    spec = make_spec(**changes)
    if not ok:
        with pytest.raises(ValueError, match=r"0\.111\.1"):
            render_vm(spec, SETTINGS, inherited=TEMPLATE)
        return
    assert validate(render_vm(spec, SETTINGS, inherited=TEMPLATE)) == []


def _device(doc: dict[str, Any]) -> dict[str, Any]:
    device: dict[str, Any] = vm_of(doc)["network_device"][0]
    return device


@pytest.mark.parametrize(("field", "value", "ok"), [
    ("model", "e1000e", True), ("model", "i82551", False), ("bridge", None, True),
    ("queues", 64, True), ("queues", 65, False), ("mac_address", "BC:24:11:00:00:01", True),
    ("mac_address", "zz", False), ("trunks", "10;20", True), ("trunks", "10-20", False),
])
def test_the_schema_holds_the_providers_network_device_validators(field: str, value: Any,
                                                                  ok: bool) -> None:
    doc = copy.deepcopy(render_vm(make_spec(), SETTINGS, inherited=TEMPLATE))
    _device(doc)[field] = value
    assert (validate(doc) == []) is ok


@pytest.mark.parametrize("path", ["cpu.type", "memory.floating", "disk.0.datastore_id",
                                  "initialization.datastore_id", "network_device.0.enabled"])
def test_the_schema_refuses_a_written_block_left_to_provider_defaults(path: str) -> None:
    doc = copy.deepcopy(render_vm(make_spec(), SETTINGS, inherited=TEMPLATE))
    node: Any = vm_of(doc)
    *parents, leaf = path.split(".")
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    del node[leaf]
    assert validate(doc), path


def test_pve_property_strings_and_cicustom() -> None:
    assert property_string("virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1") == \
        ("", {"virtio": "BC:24:11:00:00:01", "bridge": "vmbr0", "firewall": "1"})
    assert property_string("host,flags=+aes") == ("host", {"flags": "+aes"})
    kept = inherited_from({**TEMPLATE_CONFIG,
                           "cicustom": "user=local:snippets/a-user.yaml,network=local:x"},
                          disk_interface="scsi0", live=False)
    assert kept.user_data_volume == "local:snippets/a-user.yaml"
