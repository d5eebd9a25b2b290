"""Cloud-init user-data as PVE snippets: one file per VM in the ``snippets`` directory of a
directory storage, referenced from the VM's ``cicustom``.

Without a configured directory nothing is written and the VM gets only ``ciuser``."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import structlog

from provisioner.storage.atomic_file import write_atomic

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class SnippetStore:
    """``directory`` is the storage's path on this host (None: not configured), ``storage``
    its PVE storage id; ``deployment`` (the id) keeps two deployments' VMs of the same name
    apart on a shared storage."""

    directory: Path | None
    storage: str
    deployment: str | None = None

    def file_name(self, name: str) -> str:
        return f"{name}-{self.deployment}-user.yaml" if self.deployment else f"{name}-user.yaml"

    def cicustom(self, name: str) -> str | None:
        """The ``cicustom`` value of VM ``name``; None without a snippets directory."""
        if self.directory is None:
            return None
        return f"user={self.storage}:snippets/{self.file_name(name)}"

    def write(self, name: str, content: str) -> None:
        """Write VM ``name``'s user-data atomically, mode 0600: it holds the VM's own secret
        key. PVE reads snippets as root (pvedaemon builds the cloud-init drive), so nothing
        else needs to; the file belongs to whoever runs the daemon."""
        if self.directory is None:
            log.warning("pve.snippet.skipped", name=name,
                        reason="snippets_dir not configured: user-data not delivered, "
                               "only ciuser is set")
            return
        directory = self.directory / "snippets"
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / self.file_name(name)
        write_atomic(target, content.encode("utf-8"), mode=0o600)
        log.info("pve.snippet.written", path=str(target), bytes=len(content.encode("utf-8")))

    def remove(self, name: str) -> None:
        """Delete VM ``name``'s user-data (absent = done)."""
        if self.directory is None:
            return
        with contextlib.suppress(FileNotFoundError):
            (self.directory / "snippets" / self.file_name(name)).unlink()
