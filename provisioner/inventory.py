"""The VM inventory: what we created, where, and which VMIDs / IPs it holds.

VMIDs and addresses are *leases* (one row each, primary-keyed by value) so that a value can
never be handed out twice, and releasing a VM's leases happens in the same transaction as
marking it destroyed. The history of destroyed VMs is kept.
"""

from __future__ import annotations

import ipaddress
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import ClassVar

from provisioner.storage.sqlite_db import migrate, transaction

MIGRATIONS = (
    """
    CREATE TABLE vms (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        subscription_id INTEGER,
        vmid INTEGER NOT NULL,
        node TEXT NOT NULL,
        ipv4 TEXT,
        ipv6 TEXT,
        owner_wallet TEXT,
        username TEXT,
        state TEXT NOT NULL,
        smbios_uuid TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        destroyed_at INTEGER
    );
    CREATE UNIQUE INDEX vms_live_name ON vms(name) WHERE state != 'destroyed';
    CREATE INDEX vms_subscription ON vms(subscription_id);
    CREATE TABLE leases (
        kind TEXT NOT NULL CHECK (kind IN ('vmid', 'ipv4', 'ipv6')),
        value TEXT NOT NULL,
        vm_id INTEGER NOT NULL REFERENCES vms(id),
        PRIMARY KEY (kind, value)
    )
    """,
    # 2: VMIDs found taken on Proxmox by a VM that is not provably ours: never handed out.
    """
    CREATE TABLE foreign_vmids (
        vmid INTEGER PRIMARY KEY,
        noted_at INTEGER NOT NULL,
        reason TEXT NOT NULL
    )
    """,
    # 3: VMs made by hand (`vm create`): what was asked for (sizes, template, tags; never a
    # secret), the wall-clock expiry and the NFT, so a crashed create resumes the same VM.
    """
    CREATE TABLE manual_vms (
        vm_id INTEGER PRIMARY KEY REFERENCES vms(id),
        request TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        token_id INTEGER
    )
    """,
)

#: VM states in the inventory. ``reserved``: ids held, nothing on Proxmox yet.
VM_STATES = ("reserved", "created", "running", "stopped", "destroyed")


class AllocationError(Exception):
    """A pool is exhausted or a requested value is already leased."""

    #: A lease may be released by the next destroy: worth another try (see provisioner.errors).
    permanent: ClassVar[bool] = False


@dataclass(frozen=True)
class Pools:
    """Where VMIDs and addresses come from (built from the config by the caller)."""

    vmid_first: int
    vmid_last: int
    ipv4_first: str
    ipv4_last: str
    ipv4_prefixlen: int
    ipv4_gateway: str | None
    ipv6_prefix: str | None = None
    ipv6_first: int = 2
    ipv6_last: int = 254
    ipv6_gateway: str | None = None

    def vmid_candidates(self) -> Iterator[str]:
        return (str(v) for v in range(self.vmid_first, self.vmid_last + 1))

    def ipv4_candidates(self) -> Iterator[str]:
        first = int(ipaddress.IPv4Address(self.ipv4_first))
        last = int(ipaddress.IPv4Address(self.ipv4_last))
        return (str(ipaddress.IPv4Address(v)) for v in range(first, last + 1))

    def ipv6_candidates(self) -> Iterator[str]:
        if not self.ipv6_prefix:
            return iter(())
        base = int(ipaddress.IPv6Network(self.ipv6_prefix, strict=False).network_address)
        return (str(ipaddress.IPv6Address(base + v))
                for v in range(self.ipv6_first, self.ipv6_last + 1))


@dataclass(frozen=True)
class Occupied:
    """Values in use on Proxmox that our leases do not cover (another deployment's VMs in
    the same pool, anything else the token sees): never picked automatically."""

    vmids: frozenset[int] = frozenset()
    ipv4: frozenset[str] = frozenset()
    ipv6: frozenset[str] = frozenset()


NOTHING_OCCUPIED = Occupied()


def first_free(candidates: Iterable[str], taken: set[str]) -> str | None:
    """The first candidate not in ``taken`` (pure; the allocation policy)."""
    for candidate in candidates:
        if candidate not in taken:
            return candidate
    return None


@dataclass(frozen=True)
class ManualRequest:
    """What `vm create` stores with a VM made by hand (``request`` is JSON, no secrets)."""

    request: str
    expires_at: int


@dataclass(frozen=True)
class ManualVm:
    vm_id: int
    request: str
    expires_at: int
    token_id: int | None


@dataclass(frozen=True)
class VMRecord:
    id: int
    name: str
    subscription_id: int | None
    vmid: int
    node: str
    ipv4: str | None
    ipv6: str | None
    owner_wallet: str | None
    username: str | None
    state: str
    smbios_uuid: str | None
    created_at: int
    updated_at: int
    destroyed_at: int | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> VMRecord:
        return cls(**dict(zip(row.keys(), row, strict=True)))


class Inventory:
    """VM records and leases on a shared SQLite connection."""

    def __init__(self, conn: sqlite3.Connection, *,
                 clock: Callable[[], float] = time.time,
                 occupied: Callable[[], Occupied] | None = None) -> None:
        """``occupied`` reads what Proxmox holds outside our leases (asked before each
        automatic pick; explicit values, e.g. an adopted VM's own, are not checked by it)."""
        self._conn = conn
        self._clock = clock
        self._occupied = occupied
        migrate(conn, "inventory", MIGRATIONS)

    def _now(self) -> int:
        return int(self._clock())

    def _taken(self, kind: str) -> set[str]:
        rows = self._conn.execute("SELECT value FROM leases WHERE kind = ?", (kind,))
        return {row[0] for row in rows}

    def reserve(
        self,
        name: str,
        *,
        pools: Pools,
        node: str,
        subscription_id: int | None = None,
        owner_wallet: str | None = None,
        username: str | None = None,
        vmid: int | None = None,
        ipv4: str | None = None,
        ipv6: str | None = None,
        want_ipv6: bool = False,
        skip_vmids: Iterable[int] = (),
        manual: ManualRequest | None = None,
    ) -> VMRecord:
        """Atomically create a ``reserved`` VM record holding a VMID, an IPv4 and maybe an IPv6
        (and, for a VM made by hand, its request in the same transaction).

        Explicit values must be free; otherwise the lowest free value of each pool is taken.
        ``skip_vmids`` are ids seen in use on Proxmox by someone else: never handed out.
        """
        outside = self._outside()
        with transaction(self._conn):
            if self.get(name) is not None:
                raise AllocationError(f"a live VM named {name!r} already exists in the inventory")
            chosen_vmid, chosen_v4, chosen_v6 = self._choose(
                pools, vmid=vmid, ipv4=ipv4, ipv6=ipv6, want_ipv6=want_ipv6,
                skip_vmids=skip_vmids, outside=outside)
            now = self._now()
            cursor = self._conn.execute(
                "INSERT INTO vms (name, subscription_id, vmid, node, ipv4, ipv6, owner_wallet,"
                " username, state, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'reserved', ?, ?)",
                (name, subscription_id, int(chosen_vmid), node, chosen_v4, chosen_v6,
                 owner_wallet, username, now, now),
            )
            vm_id = int(cursor.lastrowid or 0)
            leases = [("vmid", chosen_vmid), ("ipv4", chosen_v4)]
            if chosen_v6:
                leases.append(("ipv6", chosen_v6))
            self._conn.executemany(
                "INSERT INTO leases (kind, value, vm_id) VALUES (?, ?, ?)",
                [(kind, value, vm_id) for kind, value in leases],
            )
            if manual is not None:
                self._conn.execute(
                    "INSERT INTO manual_vms (vm_id, request, expires_at) VALUES (?, ?, ?)",
                    (vm_id, manual.request, manual.expires_at))
        record = self.get_by_id(vm_id)
        assert record is not None
        return record

    def _outside(self) -> Occupied:
        return self._occupied() if self._occupied is not None else NOTHING_OCCUPIED

    def _choose(self, pools: Pools, *, vmid: int | None, ipv4: str | None, ipv6: str | None,
                want_ipv6: bool, skip_vmids: Iterable[int],
                outside: Occupied = NOTHING_OCCUPIED) -> tuple[str, str, str | None]:
        taken_vmids = self._taken("vmid") | self._foreign() | {str(v) for v in skip_vmids}
        chosen_vmid = self._pick("vmid", str(vmid) if vmid is not None else None,
                                 pools.vmid_candidates(), taken_vmids,
                                 {str(v) for v in outside.vmids})
        chosen_v4 = self._pick("ipv4", ipv4, pools.ipv4_candidates(), self._taken("ipv4"),
                               set(outside.ipv4))
        chosen_v6: str | None = None
        if ipv6 is not None or (want_ipv6 and pools.ipv6_prefix):
            chosen_v6 = self._pick("ipv6", ipv6, pools.ipv6_candidates(), self._taken("ipv6"),
                                   set(outside.ipv6))
        return chosen_vmid, chosen_v4, chosen_v6

    def peek(self, pools: Pools, *, vmid: int | None = None, ipv4: str | None = None,
             ipv6: str | None = None, want_ipv6: bool = False) -> tuple[int, str, str | None]:
        """What :meth:`reserve` would hand out now (VMID, IPv4, IPv6), reserving nothing:
        the dry run of ``vm create``. Raises the same AllocationError."""
        chosen_vmid, v4, v6 = self._choose(pools, vmid=vmid, ipv4=ipv4, ipv6=ipv6,
                                           want_ipv6=want_ipv6, skip_vmids=(),
                                           outside=self._outside())
        return int(chosen_vmid), v4, v6

    def manual(self, vm_id: int) -> ManualVm | None:
        """The request behind a VM made by hand, or None for a subscription's VM."""
        row = self._conn.execute("SELECT * FROM manual_vms WHERE vm_id = ?", (vm_id,)).fetchone()
        if row is None:
            return None
        return ManualVm(vm_id=row["vm_id"], request=row["request"],
                        expires_at=row["expires_at"], token_id=row["token_id"])

    def set_manual_token(self, vm_id: int, token_id: int) -> None:
        self._conn.execute("UPDATE manual_vms SET token_id = ? WHERE vm_id = ?",
                           (token_id, vm_id))

    @staticmethod
    def _pick(kind: str, explicit: str | None, candidates: Iterable[str], taken: set[str],
              outside: set[str] | None = None) -> str:
        """``explicit`` if not leased, else the first candidate neither leased nor in use
        ``outside`` our leases."""
        if explicit is not None:
            if explicit in taken:
                raise AllocationError(f"{kind} {explicit} is already in use")
            return explicit
        chosen = first_free(candidates, taken | (outside or set()))
        if chosen is None:
            raise AllocationError(f"the {kind} pool is exhausted; widen it in the config")
        return chosen

    def get(self, name: str) -> VMRecord | None:
        """The live (not destroyed) VM with this name."""
        row = self._conn.execute(
            "SELECT * FROM vms WHERE name = ? AND state != 'destroyed'", (name,)
        ).fetchone()
        return VMRecord.from_row(row) if row else None

    def get_by_id(self, vm_id: int) -> VMRecord | None:
        row = self._conn.execute("SELECT * FROM vms WHERE id = ?", (vm_id,)).fetchone()
        return VMRecord.from_row(row) if row else None

    def live_for_subscription(self, subscription_id: int) -> VMRecord | None:
        row = self._conn.execute(
            "SELECT * FROM vms WHERE subscription_id = ? AND state != 'destroyed'"
            " ORDER BY id DESC LIMIT 1", (subscription_id,),
        ).fetchone()
        return VMRecord.from_row(row) if row else None

    def latest_for_subscription(self, subscription_id: int) -> VMRecord | None:
        row = self._conn.execute(
            "SELECT * FROM vms WHERE subscription_id = ? ORDER BY id DESC LIMIT 1",
            (subscription_id,),
        ).fetchone()
        return VMRecord.from_row(row) if row else None

    def set_state(self, vm_id: int, state: str, *, smbios_uuid: str | None = None) -> None:
        if state not in VM_STATES or state == "destroyed":
            raise ValueError(f"bad state {state!r} (use release() to destroy)")
        self._conn.execute(
            "UPDATE vms SET state = ?, smbios_uuid = COALESCE(?, smbios_uuid), updated_at = ?"
            " WHERE id = ?", (state, smbios_uuid, self._now(), vm_id),
        )

    def _foreign(self) -> set[str]:
        return {str(r[0]) for r in self._conn.execute("SELECT vmid FROM foreign_vmids")}

    def foreign_vmids(self) -> dict[int, str]:
        """VMIDs quarantined because someone else's VM holds them, with the reason."""
        rows = self._conn.execute("SELECT vmid, reason FROM foreign_vmids ORDER BY vmid")
        return {int(r[0]): str(r[1]) for r in rows}

    def reassign_vmid(self, vm_id: int, pools: Pools, *, reason: str) -> VMRecord:
        """The record's VMID turned out to be taken by a foreign VM: quarantine that id and
        lease the next free one, atomically. Only for records not yet built on Proxmox."""
        outside = self._outside()
        with transaction(self._conn):
            record = self.get_by_id(vm_id)
            if record is None or record.state == "destroyed":
                raise AllocationError(f"no live VM record {vm_id}")
            self._conn.execute(
                "INSERT INTO foreign_vmids (vmid, noted_at, reason) VALUES (?, ?, ?)"
                " ON CONFLICT (vmid) DO NOTHING", (record.vmid, self._now(), reason[:300]))
            self._conn.execute("DELETE FROM leases WHERE kind = 'vmid' AND vm_id = ?", (vm_id,))
            chosen = self._pick("vmid", None, pools.vmid_candidates(),
                                self._taken("vmid") | self._foreign(),
                                {str(v) for v in outside.vmids})
            self._conn.execute("INSERT INTO leases (kind, value, vm_id) VALUES ('vmid', ?, ?)",
                               (chosen, vm_id))
            self._conn.execute("UPDATE vms SET vmid = ?, updated_at = ? WHERE id = ?",
                               (int(chosen), self._now(), vm_id))
        updated = self.get_by_id(vm_id)
        assert updated is not None
        return updated

    def release(self, vm_id: int) -> None:
        """Mark destroyed and free its VMID/IP leases, in one transaction (idempotent)."""
        with transaction(self._conn):
            now = self._now()
            self._conn.execute(
                "UPDATE vms SET state = 'destroyed', destroyed_at = COALESCE(destroyed_at, ?),"
                " updated_at = ? WHERE id = ?", (now, now, vm_id),
            )
            self._conn.execute("DELETE FROM leases WHERE vm_id = ?", (vm_id,))

    def list(self, *, include_destroyed: bool = False) -> list[VMRecord]:
        query = "SELECT * FROM vms"
        if not include_destroyed:
            query += " WHERE state != 'destroyed'"
        return [VMRecord.from_row(r) for r in self._conn.execute(query + " ORDER BY id")]

    def leases(self) -> dict[str, set[str]]:
        return {kind: self._taken(kind) for kind in ("vmid", "ipv4", "ipv6")}
