"""A crash-surviving record of clones we started and have not yet seen finish.

Why: PVE adds a clone to its pool only when the clone task ends, so while the task runs the new
VMID is taken but invisible to a pool-scoped token - exactly what a foreign VM looks like. After
a crash the backend reads this journal to tell "our clone is still running" (wait and adopt)
from "someone else holds this id" (skip it), without ever guessing.

One small JSON file per VMID, written atomically (temp file + fsync + rename), mode 0600.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from provisioner.storage.atomic_file import write_atomic


@dataclass(frozen=True)
class PendingClone:
    """Intent written before the clone POST; ``upid`` filled in once PVE answered."""

    vmid: int
    subscription_id: int | None  # None: a manual VM (`vm create`)
    name: str
    template_vmid: int
    started_at: float
    upid: str | None = None


class CloneJournal:
    """Directory-backed map vmid -> :class:`PendingClone` (thread-safe per file)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _path(self, vmid: int) -> Path:
        return self.directory / f"clone-{int(vmid)}.json"

    def get(self, vmid: int) -> PendingClone | None:
        """The pending clone into ``vmid``, or None (also for an unreadable entry)."""
        try:
            data = json.loads(self._path(vmid).read_text(encoding="utf-8"))
            return PendingClone(
                vmid=int(data["vmid"]), subscription_id=_optional_int(data["subscription_id"]),
                name=str(data["name"]), template_vmid=int(data["template_vmid"]),
                started_at=float(data["started_at"]),
                upid=str(data["upid"]) if data.get("upid") else None)
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            return None

    def record(self, entry: PendingClone) -> None:
        """Write (or overwrite) the entry durably before the call it describes."""
        target = self._path(entry.vmid)
        write_atomic(target, json.dumps(asdict(entry), sort_keys=True).encode(), mode=0o600)

    def remove(self, vmid: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(vmid).unlink()

    def all(self) -> list[PendingClone]:
        out: list[PendingClone] = []
        for path in sorted(self.directory.glob("clone-*.json")):
            try:
                vmid = int(path.stem.split("-", 1)[1])
            except ValueError:
                continue
            entry = self.get(vmid)
            if entry is not None:
                out.append(entry)
        return out


def _optional_int(value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, (int, str, float)):
        raise TypeError(f"not an integer: {value!r}")
    return int(value)


def new_entry(vmid: int, subscription_id: int | None, name: str,
              template_vmid: int) -> PendingClone:
    return PendingClone(vmid=vmid, subscription_id=subscription_id, name=name,
                        template_vmid=template_vmid, started_at=time.time())


class MemoryCloneJournal:
    """The same interface kept in memory: survives retries within one process, not a crash
    (used when no journal directory is configured)."""

    def __init__(self) -> None:
        self._entries: dict[int, PendingClone] = {}

    def get(self, vmid: int) -> PendingClone | None:
        return self._entries.get(int(vmid))

    def record(self, entry: PendingClone) -> None:
        self._entries[entry.vmid] = entry

    def remove(self, vmid: int) -> None:
        self._entries.pop(int(vmid), None)

    def all(self) -> list[PendingClone]:
        return [self._entries[k] for k in sorted(self._entries)]


#: Where the backend keeps its clones in flight: on disk (survives a crash) or in memory.
Journal = CloneJournal | MemoryCloneJournal
