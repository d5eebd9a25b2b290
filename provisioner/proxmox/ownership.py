"""Proof that a VM the API shows is ours before anything touches it (the rules themselves are
:func:`provisioner.backend.ownership_problems`; this applies them to what the API sees)."""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from provisioner.backend import VMRef, ownership_problems
from provisioner.errors import OwnershipMismatch
from provisioner.proxmox.vm_view import VMView

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class OwnershipRules:
    """Our pool and tag: every VM we made carries both."""

    pool: str
    tag: str

    def problems(self, vm: VMView, *, subscription_id: int | None, name: str,
                 smbios_uuid: str | None, require_tags: bool) -> list[str]:
        """Why ``vm`` is not provably ours (empty list = it is)."""
        return ownership_problems(
            vm, pool=self.pool, tag=self.tag, subscription_id=subscription_id, name=name,
            smbios_uuid=smbios_uuid, require_tags=require_tags, is_template=vm.is_template)

    def verify_owned(self, vm: VMView, ref: VMRef, action: str) -> None:
        """Raise OwnershipMismatch unless ``vm`` is the VM ``ref`` describes."""
        if ref.smbios_uuid is None:
            log.warning("pve.ownership.no_recorded_uuid", vmid=vm.vmid, action=action,
                        detail="smbios uuid never recorded; checked pool, tags and marker only")
        # tags are not a clone parameter: a clone whose configure step never ran (crash) has
        # none yet; pool + marker (written in the clone call) still prove it is ours
        half_made = not [t for t in vm.tags if t != f"{self.tag}-deleting"]
        if half_made:
            log.info("pve.ownership.untagged_clone", vmid=vm.vmid, action=action)
        problems = self.problems(vm, subscription_id=ref.subscription_id, name=ref.name,
                                 smbios_uuid=ref.smbios_uuid, require_tags=not half_made)
        if problems:
            log.warning("pve.ownership.mismatch", vmid=vm.vmid, action=action, problems=problems)
            raise OwnershipMismatch(0, f"refusing to {action} VM {vm.vmid}: not ours ("
                                       + "; ".join(problems) + ")")
