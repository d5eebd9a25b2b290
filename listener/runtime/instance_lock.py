"""One listener per database: an exclusive ``flock`` on ``<db>.lock``, held for the daemon's life.

The kernel drops the lock when its holder exits, however it dies (SIGKILL included), so a
left-over file never blocks a start. The holder writes its pid and command into the file
for the message the next one prints. Operator commands that change what the listener
manages hold the same lock while they run, so a listener cannot start under them; while a
listener holds it they refuse, or do only what it never touches (README "Operating it").
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from listener.errors import UserError


@dataclass(frozen=True)
class Holder:
    """Who holds the lock, as its holder wrote it (pid None: not written yet)."""

    pid: int | None
    command: str

    def __str__(self) -> str:
        pid = f"pid {self.pid}" if self.pid is not None else "pid unknown"
        return f"`blockhost {self.command}`, {pid}" if self.command else pid

    @property
    def is_listener(self) -> bool:
        return self.command == "listen"


class InstanceLocked(UserError):
    """The lock is held by another process (a listener or an operator command)."""

    def __init__(self, message: str, holder: Holder) -> None:
        super().__init__(message)
        self.holder = holder


def lock_path(db_path: Path) -> Path:
    """The lock file beside the database."""
    return db_path.with_name(db_path.name + ".lock")


class InstanceLock:
    """The exclusive lock of one database, taken without waiting."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.path = lock_path(db_path)
        self._fd: int | None = None

    def try_acquire(self, command: str) -> Holder | None:
        """Take the lock for ``command`` (None) or say who holds it."""
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            return holder
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {command}\n".encode(), 0)
        self._fd = fd
        return None

    def release(self) -> None:
        """Give the lock back (the kernel does it too when the process dies)."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None

    @classmethod
    @contextlib.contextmanager
    def held(cls, db_path: Path, command: str) -> Iterator[InstanceLock]:
        """Hold the lock for the block; raise InstanceLocked if another process has it."""
        lock = cls(db_path)
        holder = lock.try_acquire(command)
        if holder is not None:
            todo = ("only one listener may run per database: stop it first or point db.path "
                    "at another file" if holder.is_listener else "retry once it has finished")
            raise InstanceLocked(f"database {db_path} is in use by {holder} (lock "
                                 f"{lock.path}); {todo}", holder)
        try:
            yield lock
        finally:
            lock.release()

    def _open(self) -> int:
        """The lock file, created 0600 (and given to the database's owner when root makes
        it, so the listener's user can still open it)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except PermissionError:
            raise UserError(f"cannot open the lock file {self.path}: permission denied; run "
                            "blockhost as the user that owns the database") from None
        if os.geteuid() == 0 and self.db_path.exists():
            owner = self.db_path.stat()
            with contextlib.suppress(OSError):
                os.fchown(fd, owner.st_uid, owner.st_gid)
        return fd


@contextlib.contextmanager
def unless_listening(db_path: Path, command: str) -> Iterator[Holder | None]:
    """For an operator command that changes state: hold the lock while it runs (yields
    None), or yield the process that holds it, for the command to refuse or to do only
    what that process never touches."""
    lock = InstanceLock(db_path)
    holder = lock.try_acquire(command)
    try:
        yield holder
    finally:
        lock.release()


def _read_holder(fd: int) -> Holder:
    text = os.pread(fd, 256, 0).decode(errors="replace").strip()
    pid_text, _, command = text.partition(" ")
    return Holder(int(pid_text) if pid_text.isdigit() else None, command)
