"""The reference Blockhost system's VM database (``/var/lib/blockhost/vms.json``), read strictly.

Pure: text in, records out. Its shape (reference-system.md §3.4): ``{vms: {name: record},
next_vmid, allocated_ips, allocated_ipv6, reserved_nft_tokens: {id: {vm_name, status, …}}}``,
records ``{vm_name, vmid, ip_address, ipv6_address, expires_at (ISO, UTC), owner, status,
wallet_address | owner_wallet, nft_token_id?, username?, …}``. Anything malformed is one
:class:`ReferenceFormatError` naming the field, so an import changes nothing on a bad file.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from listener.errors import UserError

STATUSES = ("active", "suspended", "destroyed")
_WALLET = re.compile(r"^0x[0-9a-fA-F]{40}$")
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$")


class ReferenceFormatError(UserError):
    """vms.json is not in the reference's format."""


@dataclass(frozen=True)
class ReferenceVm:
    """One VM the reference system made."""

    name: str
    vmid: int
    ipv4: str
    ipv6: str | None
    expires_at: int
    status: str
    wallet: str | None
    token_id: int | None
    username: str | None


def parse_vms_json(text: str, *, source: str) -> list[ReferenceVm]:
    """Every VM record of ``text`` (a vms.json), by name; raises ReferenceFormatError."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _bad(source, f"is not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(document, dict) or not isinstance(document.get("vms"), dict):
        raise _bad(source, "has no 'vms' object (the reference's top level is {vms: {...}, "
                           "next_vmid, allocated_ips, reserved_nft_tokens})")
    tokens = _minted_tokens(document.get("reserved_nft_tokens", {}), source)
    records = [_record(name, raw, tokens, source)
               for name, raw in sorted(document["vms"].items())]
    _unique(records, source)
    return records


def _bad(source: str, problem: str) -> ReferenceFormatError:
    return ReferenceFormatError(f"{source} {problem}; nothing was imported: fix the file or "
                                "pass the reference's /var/lib/blockhost/vms.json")


def _minted_tokens(raw: Any, source: str) -> dict[str, int]:
    """VM name → token id of ``reserved_nft_tokens`` entries marked minted (the old format)."""
    if not isinstance(raw, dict):
        raise _bad(source, "has a 'reserved_nft_tokens' that is not an object")
    out: dict[str, int] = {}
    for key, entry in raw.items():
        if not isinstance(entry, dict) or not str(key).isdigit():
            raise _bad(source, f"reserved_nft_tokens[{key!r}] is not {{vm_name, status}} "
                               "under a numeric token id")
        if entry.get("status") == "minted" and isinstance(entry.get("vm_name"), str):
            out[entry["vm_name"]] = int(key)
    return out


def _record(name: str, raw: Any, tokens: Mapping[str, int], source: str) -> ReferenceVm:
    where = f"vms[{name!r}]"
    if not isinstance(raw, dict):
        raise _bad(source, f"{where} is not an object")
    if raw.get("vm_name", name) != name or not _NAME.match(name):
        raise _bad(source, f"{where}.vm_name does not match its key (or is not a VM name)")
    vmid = raw.get("vmid")
    if isinstance(vmid, bool) or not isinstance(vmid, int) or not 100 <= vmid <= 999_999_999:
        raise _bad(source, f"{where}.vmid is not a Proxmox VMID (an integer >= 100)")
    status = raw.get("status")
    if status not in STATUSES:
        raise _bad(source, f"{where}.status is not one of {', '.join(STATUSES)}")
    return ReferenceVm(
        name=name, vmid=vmid, ipv4=_address(raw.get("ip_address"), 4, f"{where}.ip_address",
                                            source, required=True) or "",
        ipv6=_address(raw.get("ipv6_address"), 6, f"{where}.ipv6_address", source),
        expires_at=_timestamp(raw.get("expires_at"), f"{where}.expires_at", source),
        status=str(status), wallet=_wallet(raw, where, source),
        token_id=_token(raw, tokens.get(name), where, source),
        username=raw.get("username") if isinstance(raw.get("username"), str) else None)


def _address(value: Any, version: int, where: str, source: str, *,
             required: bool = False) -> str | None:
    if value in (None, "") and not required:
        return None
    try:
        address = ipaddress.ip_address(str(value))
    except ValueError:
        raise _bad(source, f"{where} is not an IPv{version} address") from None
    if address.version != version:
        raise _bad(source, f"{where} is not an IPv{version} address")
    return str(address)


def _timestamp(value: Any, where: str, source: str) -> int:
    """The reference writes ISO 8601 in UTC (``2026-03-01T12:00:00+00:00`` or ``…Z``)."""
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise _bad(source, f"{where} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def _wallet(raw: dict[str, Any], where: str, source: str) -> str | None:
    for key in ("wallet_address", "owner_wallet"):
        value = raw.get(key)
        if value in (None, ""):
            continue
        if not isinstance(value, str) or not _WALLET.match(value):
            raise _bad(source, f"{where}.{key} is not a 0x wallet address")
        return value
    return None


def _token(raw: dict[str, Any], reserved: int | None, where: str, source: str) -> int | None:
    value = raw.get("nft_token_id")
    if value is None:
        return reserved
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _bad(source, f"{where}.nft_token_id is not a token id (an integer >= 0)")
    return value


def _unique(records: list[ReferenceVm], source: str) -> None:
    live = [r for r in records if r.status != "destroyed"]
    for field in ("vmid", "ipv4", "token_id"):
        values = [getattr(r, field) for r in live if getattr(r, field) is not None]
        twice = sorted({str(v) for v in values if values.count(v) > 1})
        if twice:
            raise _bad(source, f"names the same {field} for two live VMs ({', '.join(twice)})")
