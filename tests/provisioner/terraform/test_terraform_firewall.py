"""The Terraform backend renders the same tenant isolation as the API backend: the
``ipfilter-net0`` set with exactly the VM's addresses and every firewall flag stated (the
provider's defaults would let a tenant send router advertisements)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from provisioner.terraform.firewall_blocks import IPSET_ADDRESS, IPSET_RESOURCE, OPTIONS_RESOURCE
from provisioner.terraform.render import VM_ADDRESS, render_vm, to_json_bytes
from provisioner.terraform.schema import validate
from tests.provisioner.terraform.pve_configs import TEMPLATE
from tests.provisioner.terraform.test_terraform_render import SETTINGS, make_spec, vm_of


def firewall_of(doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    resources = doc["resource"]
    return resources[IPSET_RESOURCE]["ipfilter"], resources[OPTIONS_RESOURCE]["vm"]


def test_ipset_holds_exactly_the_vms_addresses() -> None:
    doc = render_vm(make_spec(), SETTINGS, inherited=TEMPLATE)
    ipset, options = firewall_of(doc)
    assert (ipset["node_name"], ipset["vm_id"], ipset["name"]) == ("pve1", 4200, "ipfilter-net0")
    assert [c["name"] for c in ipset["cidr"]] == ["10.0.0.42", "2001:db8::42"]
    assert ipset["depends_on"] == [VM_ADDRESS]
    assert options["depends_on"] == [VM_ADDRESS, IPSET_ADDRESS]
    assert vm_of(doc)["network_device"][0]["firewall"] is True
    assert validate(doc) == []


def test_every_flag_is_stated_against_the_providers_defaults() -> None:
    _, options = firewall_of(render_vm(make_spec(), SETTINGS, inherited=TEMPLATE))
    assert {k: v for k, v in options.items() if k not in ("depends_on", "node_name", "vm_id")} \
        == {"enabled": True, "ipfilter": True, "macfilter": True, "dhcp": False, "ndp": True,
            "radv": False, "input_policy": "ACCEPT", "output_policy": "ACCEPT"}


def test_ipv4_only_and_rerender_is_byte_identical() -> None:
    spec = make_spec(ipv6_cidr=None, gateway6=None)
    first = to_json_bytes(render_vm(spec, SETTINGS, inherited=TEMPLATE))
    assert first == to_json_bytes(render_vm(spec, SETTINGS, inherited=TEMPLATE))
    ipset, _ = firewall_of(render_vm(spec, SETTINGS, inherited=TEMPLATE))
    assert [c["name"] for c in ipset["cidr"]] == ["10.0.0.42"]


def test_the_schema_catches_a_wrong_firewall_value() -> None:
    doc = render_vm(make_spec(), SETTINGS, inherited=TEMPLATE)
    mutations: list[Callable[[dict[str, Any], dict[str, Any]], None]] = [
        lambda o, s: o.update(input_policy="MAYBE"),
        lambda o, s: o.update(isolation=True),
        lambda o, s: s.update(name="0bad"),
        lambda o, s: s["cidr"][0].update(prefix=24)]
    for mutate in mutations:
        bad = copy.deepcopy(doc)
        ipset, options = firewall_of(bad)
        mutate(options, ipset)
        assert validate(bad)


def test_an_adoption_imports_the_existing_ipset_instead_of_creating_it() -> None:
    """bpg's ipset Importer takes ``vm/<node>/<vmid>/<name>``; creating a set PVE already has
    fails the apply with "already exists", so an adopted VM's set is imported beside it."""
    doc = render_vm(make_spec(), SETTINGS, inherited=TEMPLATE, adopt=True, adopt_ipset=True)
    assert doc["import"] == [{"to": VM_ADDRESS, "id": "pve1/4200"},
                             {"to": IPSET_ADDRESS, "id": "vm/pve1/4200/ipfilter-net0"}]
    assert validate(doc) == []
    alone = render_vm(make_spec(), SETTINGS, inherited=TEMPLATE, adopt_ipset=True)
    assert alone["import"] == [{"to": IPSET_ADDRESS, "id": "vm/pve1/4200/ipfilter-net0"}]
    assert validate(alone) == []
    for bad in ({"to": IPSET_ADDRESS, "id": "vm/pve1/4200/ipfilter-net1"},
                {"to": IPSET_ADDRESS, "id": "pve1/4200"},
                {"to": VM_ADDRESS, "id": "vm/pve1/4200/ipfilter-net0"}):
        wrong = copy.deepcopy(doc)
        wrong["import"][1] = bad
        assert validate(wrong), bad
    twice = copy.deepcopy(doc)
    twice["import"][0] = twice["import"][1]
    assert validate(twice)  # the same import twice
