"""VM inventory and leases on a real SQLite file."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provisioner.inventory import AllocationError, Inventory, Pools
from provisioner.storage.sqlite_db import connect


def pools(prefix: str = "10.0.0.0/24", first: str = "10.0.0.10", last: str = "10.0.0.12",
          vmids: tuple[int, int] = (100, 102), v6: str | None = None) -> Pools:
    return Pools(vmid_first=vmids[0], vmid_last=vmids[1], ipv4_first=first, ipv4_last=last,
                 ipv4_prefixlen=ipaddress.ip_network(prefix).prefixlen, ipv4_gateway="10.0.0.1",
                 ipv6_prefix=v6)


@pytest.fixture
def inventory(tmp_path: Path) -> Inventory:
    return Inventory(connect(tmp_path / "inv.db"))


class TestReserve:
    def test_lowest_free_values(self, inventory: Inventory) -> None:
        a = inventory.reserve("a", pools=pools(), node="pve1", subscription_id=1)
        b = inventory.reserve("b", pools=pools(), node="pve1", subscription_id=2)
        assert (a.vmid, a.ipv4, a.state) == (100, "10.0.0.10", "reserved")
        assert (b.vmid, b.ipv4) == (101, "10.0.0.11")

    def test_skip_vmids_taken_behind_our_back(self, inventory: Inventory) -> None:
        a = inventory.reserve("a", pools=pools(), node="pve1", skip_vmids=[100])
        assert a.vmid == 101

    def test_exhaustion_is_clear(self, inventory: Inventory) -> None:
        for name in "abc":
            inventory.reserve(name, pools=pools(), node="pve1")
        with pytest.raises(AllocationError, match="pool is exhausted"):
            inventory.reserve("d", pools=pools(), node="pve1")

    def test_explicit_value_in_use(self, inventory: Inventory) -> None:
        inventory.reserve("a", pools=pools(), node="pve1", ipv4="10.0.0.11")
        with pytest.raises(AllocationError, match="already in use"):
            inventory.reserve("b", pools=pools(), node="pve1", ipv4="10.0.0.11")

    def test_live_names_are_unique(self, inventory: Inventory) -> None:
        inventory.reserve("a", pools=pools(), node="pve1")
        with pytest.raises(AllocationError, match="already exists"):
            inventory.reserve("a", pools=pools(), node="pve1")

    def test_release_frees_and_keeps_history(self, inventory: Inventory) -> None:
        a = inventory.reserve("a", pools=pools(), node="pve1", subscription_id=5)
        inventory.release(a.id)
        inventory.release(a.id)  # idempotent
        assert inventory.live_for_subscription(5) is None
        assert inventory.latest_for_subscription(5).state == "destroyed"
        again = inventory.reserve("a", pools=pools(), node="pve1", subscription_id=5)
        assert (again.vmid, again.ipv4) == (100, "10.0.0.10")

    def test_ipv6_from_prefix(self, inventory: Inventory) -> None:
        record = inventory.reserve("a", pools=pools(v6="2001:db8::/64"), node="pve1",
                                   want_ipv6=True)
        assert record.ipv6 == "2001:db8::2"

    def test_wide_prefix(self, inventory: Inventory) -> None:
        wide = pools(prefix="10.0.0.0/16", first="10.0.0.255", last="10.0.1.1")
        got = [inventory.reserve(n, pools=wide, node="pve1").ipv4 for n in "abc"]
        assert got == ["10.0.0.255", "10.0.1.0", "10.0.1.1"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 30)), max_size=60))
def test_never_handed_out_twice(tmp_path_factory: pytest.TempPathFactory,
                                ops: list[tuple[bool, int]]) -> None:
    """Random reserve/release sequences: live VMs never share a VMID or an address."""
    inv = Inventory(connect(tmp_path_factory.mktemp("prop") / "inv.db"))
    pool = pools(first="10.0.0.10", last="10.0.0.19", vmids=(100, 109))
    live: list[int] = []
    for step, (reserve, pick) in enumerate(ops):
        if reserve:
            try:
                live.append(inv.reserve(f"vm{step}", pools=pool, node="pve1").id)
            except AllocationError:
                assert len(inv.list()) == 10
        elif live:
            inv.release(live.pop(pick % len(live)))
        records = inv.list()
        assert len({r.vmid for r in records}) == len(records)
        assert len({r.ipv4 for r in records}) == len(records)
        assert inv.leases()["vmid"] == {str(r.vmid) for r in records}


class TestForeignVmids:
    def test_reassign_quarantines_the_taken_id(self, inventory: Inventory) -> None:
        record = inventory.reserve("a", pools=pools(), node="pve1", subscription_id=1)
        assert record.vmid == 100
        moved = inventory.reassign_vmid(record.id, pools(), reason="VM 100 is someone else's")
        assert moved.vmid == 101 and moved.ipv4 == record.ipv4
        assert inventory.foreign_vmids() == {100: "VM 100 is someone else's"}
        assert inventory.leases()["vmid"] == {"101"}
        # Even after everything is released, the foreign id is never handed out again.
        inventory.release(moved.id)
        assert inventory.reserve("b", pools=pools(), node="pve1").vmid == 101

    def test_reassign_fails_cleanly_when_the_range_is_full(self, inventory: Inventory) -> None:
        narrow = pools(vmids=(100, 100))
        record = inventory.reserve("a", pools=narrow, node="pve1")
        with pytest.raises(AllocationError, match="exhausted"):
            inventory.reassign_vmid(record.id, narrow, reason="taken")
        assert inventory.get_by_id(record.id).vmid == 100
        assert inventory.foreign_vmids() == {}


def test_concurrent_first_opens_migrate_once(tmp_path: Path) -> None:
    """Workers opening a fresh database at the same moment must not race the migrations."""
    import threading

    from listener.chain.journal import Store

    path = tmp_path / "race.db"
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def open_all() -> None:
        try:
            barrier.wait()
            store = Store.open(path)
            Inventory(store.conn)
            store.close()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=open_all) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    conn = connect(path)
    versions = conn.execute("SELECT component, COUNT(*) FROM schema_migrations GROUP BY component")
    assert dict(versions.fetchall())["inventory"] == 3
