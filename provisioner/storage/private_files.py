"""The database's files private from their first byte, and owned by the daemon's user.

SQLite creates ``-wal`` and ``-shm`` with the mode of the database file and, when running as
root, gives them the database file's owner. So it is enough that the database file itself is
created 0600 (never chmod-ed afterwards: until then it, and the sidecars made meanwhile, would
carry the umask's mode) and, when root creates it (``sudo blockhost ...`` before the daemon's
first start), that it belongs to the owner of its directory, the daemon's state directory.
Sidecars left world-readable by an older version are tightened on the next open.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

PRIVATE = 0o600
SIDECARS = ("-wal", "-shm", "-journal")


def prepare_db_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists (then tighten what we own)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE)
    except FileExistsError:
        _tighten(path)
    else:
        try:
            if os.geteuid() == 0:
                owner = path.parent.stat()
                os.fchown(fd, owner.st_uid, owner.st_gid)
        finally:
            os.close(fd)
    for suffix in SIDECARS:
        _tighten(path.with_name(path.name + suffix), owner_of=path)


def _tighten(path: Path, *, owner_of: Path | None = None) -> None:
    """Mode 0600 on an existing file; as root also the owner of ``owner_of``."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    with contextlib.suppress(PermissionError):
        if stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(path, stat.S_IMODE(st.st_mode) & 0o700)
        if owner_of is not None and os.geteuid() == 0:
            ref = owner_of.stat()
            if (st.st_uid, st.st_gid) != (ref.st_uid, ref.st_gid):
                os.chown(path, ref.st_uid, ref.st_gid)
