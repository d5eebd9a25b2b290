"""The pure parts of `blockhost import-reference`: reading the reference's vms.json strictly
(listener/ops/reference_vms.py) and judging each VM (listener/ops/import_plan.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from listener.ops.import_plan import ChainSide, Ours, ProxmoxSide, judge, subscription_of
from listener.ops.reference_vms import ReferenceFormatError, ReferenceVm, parse_vms_json

WALLET = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
OTHER = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"


def record(**overrides: Any) -> dict[str, Any]:
    base = {"vm_name": "blockhost-001", "vmid": 100, "ip_address": "10.0.0.5",
            "ipv6_address": None, "expires_at": "2026-03-01T12:00:00+00:00", "owner": "admin",
            "status": "active", "created_at": "2026-01-01T00:00:00+00:00", "purpose": "",
            "wallet_address": WALLET}
    return {**base, **overrides}


def document(*records: dict[str, Any], reserved: dict[str, Any] | None = None) -> str:
    return json.dumps({"vms": {r["vm_name"]: r for r in records}, "next_vmid": 101,
                       "allocated_ips": [], "allocated_ipv6": [],
                       "reserved_nft_tokens": reserved or {}})


def test_a_reference_record_is_read() -> None:
    [vm] = parse_vms_json(document(record(nft_token_id=4, username="alice",
                                          ipv6_address="2001:db8::5")), source="vms.json")
    assert vm == ReferenceVm(name="blockhost-001", vmid=100, ipv4="10.0.0.5",
                             ipv6="2001:db8::5", expires_at=1_772_366_400, status="active",
                             wallet=WALLET, token_id=4, username="alice")


def test_the_old_format_names_its_token_in_reserved_nft_tokens() -> None:
    reserved = {"3": {"vm_name": "blockhost-001", "status": "minted"},
                "4": {"vm_name": "blockhost-002", "status": "failed"}}
    vms = parse_vms_json(
        document(record(), record(vm_name="blockhost-002", vmid=101, ip_address="10.0.0.6"),
                 reserved=reserved), source="vms.json")
    assert [(v.name, v.token_id) for v in vms] == [("blockhost-001", 3), ("blockhost-002", None)]


def test_a_z_suffixed_time_and_the_engines_owner_wallet_are_read() -> None:
    [vm] = parse_vms_json(document(record(expires_at="2026-03-01T12:00:00Z",
                                          wallet_address=None, owner_wallet=WALLET)),
                          source="vms.json")
    assert (vm.expires_at, vm.wallet) == (1_772_366_400, WALLET)


@pytest.mark.parametrize("text,problem", [
    ("{", "is not JSON"),
    ("[]", "has no 'vms' object"),
    ('{"vms": []}', "has no 'vms' object"),
    (document(record(vmid="100")), "vmid is not a Proxmox VMID"),
    (document(record(vmid=True)), "vmid is not a Proxmox VMID"),
    (document(record(vmid=5)), "vmid is not a Proxmox VMID"),
    (document(record(status="paused")), "status is not one of"),
    (document(record(ip_address="10.0.0")), "ip_address is not an IPv4 address"),
    (document(record(ip_address="2001:db8::1")), "ip_address is not an IPv4 address"),
    (document(record(ipv6_address="10.0.0.1")), "ipv6_address is not an IPv6 address"),
    (document(record(expires_at="tomorrow")), "expires_at is not an ISO 8601 time"),
    (document(record(wallet_address="alice")), "wallet_address is not a 0x wallet address"),
    (document(record(nft_token_id=-1)), "nft_token_id is not a token id"),
    (json.dumps({"vms": {"blockhost-001": record(vm_name="blockhost-002")}}),
     "vm_name does not match its key"),
    (json.dumps({"vms": {"blockhost-001": "x"}}), "is not an object"),
    (document(record(), reserved={"x": {"vm_name": "a", "status": "minted"}}),
     "reserved_nft_tokens['x']"),
    (json.dumps({"vms": {}, "reserved_nft_tokens": []}), "'reserved_nft_tokens' that is not"),
    (document(record(), record(vm_name="blockhost-002", ip_address="10.0.0.6")),
     "the same vmid for two live VMs (100)"),
    (document(record(), record(vm_name="blockhost-002", vmid=101)),
     "the same ipv4 for two live VMs (10.0.0.5)"),
    (document(record(nft_token_id=1), record(vm_name="blockhost-002", vmid=101,
                                             ip_address="10.0.0.6", nft_token_id=1)),
     "the same token_id for two live VMs (1)"),
])
def test_a_malformed_file_is_one_line_naming_the_field(text: str, problem: str) -> None:
    with pytest.raises(ReferenceFormatError) as raised:
        parse_vms_json(text, source="/var/lib/blockhost/vms.json")
    message = str(raised.value)
    assert problem in message and "\n" not in message
    assert message.startswith("/var/lib/blockhost/vms.json ") and "nothing was imported" in message


def test_a_destroyed_vm_may_share_what_a_live_one_holds() -> None:
    vms = parse_vms_json(document(record(), record(vm_name="blockhost-002", status="destroyed")),
                         source="vms.json")
    assert [v.status for v in vms] == ["active", "destroyed"]


NOTHING = Ours(vmids=frozenset(), addresses=frozenset(), names=frozenset(),
               subscriptions=frozenset(), tokens=frozenset())
VM = ReferenceVm(name="blockhost-007", vmid=100, ipv4="10.0.0.5", ipv6=None, expires_at=1,
                 status="active", wallet=WALLET, token_id=3, username=None)
PVE = ProxmoxSide(name="blockhost-007", node="pve1", power="running")
CHAIN = ChainSide(subscriber=WALLET, expires_at=5, cancelled=False)


def verdict(vm: ReferenceVm = VM, *, pve: ProxmoxSide | None = PVE,
            chain: ChainSide | None = CHAIN, owner: str | None = WALLET,
            ours: Ours = NOTHING) -> str | None:
    return judge(vm, prefix="blockhost-", pve=pve, chain=chain, token_owner=owner,
                 ours=ours).reason


def test_a_vm_every_side_agrees_on_is_adopted() -> None:
    result = judge(VM, prefix="blockhost-", pve=PVE, chain=CHAIN, token_owner=WALLET.lower(),
                   ours=NOTHING)
    assert (result.reason, result.subscription_id, result.token_id, result.wallet) == \
        (None, 7, 3, WALLET)


def test_a_vm_without_wallet_or_token_takes_the_chains_subscriber() -> None:
    vm = ReferenceVm(**{**VM.__dict__, "wallet": None, "token_id": None})
    result = judge(vm, prefix="blockhost-", pve=PVE, chain=CHAIN, token_owner=None,
                   ours=NOTHING)
    assert (result.reason, result.token_id, result.wallet) == (None, None, WALLET)


@pytest.mark.parametrize("kwargs,reason", [
    ({"vm": ReferenceVm(**{**VM.__dict__, "status": "destroyed"})}, "status is destroyed"),
    ({"vm": ReferenceVm(**{**VM.__dict__, "name": "web-7"})}, "no subscription is named"),
    ({"pve": None}, "Proxmox has no VM at VMID 100"),
    ({"pve": ProxmoxSide(name="other", node="pve1", power="running")}, "is named 'other'"),
    ({"ours": Ours(vmids=frozenset({100}), addresses=frozenset(), names=frozenset(),
                   subscriptions=frozenset(), tokens=frozenset())}, "already in our inventory"),
    ({"ours": Ours(vmids=frozenset(), addresses=frozenset({"10.0.0.5"}), names=frozenset(),
                   subscriptions=frozenset(), tokens=frozenset())}, "address is already leased"),
    ({"ours": Ours(vmids=frozenset(), addresses=frozenset(), names=frozenset(),
                   subscriptions=frozenset({7}), tokens=frozenset())},
     "subscription 7 already has a VM"),
    ({"chain": None}, "subscription 7 does not exist"),
    ({"chain": ChainSide(subscriber=OTHER, expires_at=5, cancelled=False)},
     f"belongs to {OTHER}"),
    ({"ours": Ours(vmids=frozenset(), addresses=frozenset(), names=frozenset(),
                   subscriptions=frozenset(), tokens=frozenset({3}))}, "NFT #3 is already"),
    ({"owner": OTHER}, "NFT #3 is not owned by the subscriber"),
    ({"owner": None}, "no such token"),
])
def test_a_vm_is_left_alone_with_the_reason(kwargs: dict[str, Any], reason: str) -> None:
    found = verdict(**kwargs)
    assert found is not None and reason in found


@pytest.mark.parametrize("name,expected", [("blockhost-007", 7), ("blockhost-1234", 1234),
                                           ("blockhost-", None), ("blockhost-7a", None),
                                           ("other-007", None)])
def test_the_subscription_id_comes_from_the_name(name: str, expected: int | None) -> None:
    assert subscription_of(name, "blockhost-") == expected
