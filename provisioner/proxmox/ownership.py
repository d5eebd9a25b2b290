"""Proof that a VM the API shows is ours before anything touches it (the rules themselves are
:func:`provisioner.backend.ownership_problems`; this applies them to what the API sees)."""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from provisioner.backend import (
    VMRef,
    deployment_tag,
    marker_for,
    other_deployment,
    ownership_problems,
    parse_marker,
    subscription_tag,
)
from provisioner.errors import OwnershipMismatch
from provisioner.proxmox.client import Param, PveClient
from provisioner.proxmox.encoders import join_tags
from provisioner.proxmox.vm_view import VMView

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class OwnershipRules:
    """Our pool, tag and deployment id: every VM we made carries all three (``deployment``
    None: a backend without an id, which owns only VMs whose markers carry none)."""

    pool: str
    tag: str
    deployment: str | None = None

    def marker(self, subscription_id: int | None, name: str) -> str:
        """The description marker a VM of ours carries (written in the clone call)."""
        return marker_for(subscription_id, name, managed_by=self.tag, deployment=self.deployment)

    def own_tags(self, subscription_id: int | None) -> list[str]:
        """Our tag, the subscription's and (with an id) the deployment's."""
        tags = [self.tag, subscription_tag(subscription_id)]
        if self.deployment is not None:
            tags.append(deployment_tag(self.tag, self.deployment))
        return tags

    def other_deployment(self, vm: VMView) -> str | None:
        """Another deployment's id that ``vm`` carries (never ours to touch), else None."""
        return other_deployment(vm, tag=self.tag, deployment=self.deployment)

    def marked_ours(self, vm: VMView) -> bool:
        """Whether ``vm``'s marker is ours: our tag and exactly our deployment id (a VM
        made before deployment ids is not, until ``blockhost markers migrate``)."""
        marker = parse_marker(vm.description)
        return (marker is not None and marker.managed_by == self.tag
                and marker.deployment == self.deployment and self.other_deployment(vm) is None)

    def problems(self, vm: VMView, *, subscription_id: int | None, name: str,
                 smbios_uuid: str | None, require_tags: bool) -> list[str]:
        """Why ``vm`` is not provably ours (empty list = it is)."""
        return ownership_problems(
            vm, pool=self.pool, tag=self.tag, deployment=self.deployment,
            subscription_id=subscription_id, name=name, smbios_uuid=smbios_uuid,
            require_tags=require_tags, is_template=vm.is_template)

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


def write_deployment_marker(client: PveClient, vm: VMView, rules: OwnershipRules,
                            subscription_id: int | None) -> None:
    """Give a VM made before deployment ids our id: the marker line gains ``deployment=``
    (the rest of the description is kept) and the tags gain ``<tag>-<id>``, in one PUT that
    is a compare-and-set on the digest just read (a VM changed meanwhile is left alone)."""
    if rules.deployment is None:
        raise ValueError("no deployment id to write")
    rest = vm.description.split("\n", 1)[1:]
    params: dict[str, Param] = {
        "description": "\n".join([rules.marker(subscription_id, vm.name), *rest]),
        "tags": join_tags([*vm.tags, deployment_tag(rules.tag, rules.deployment)]),
    }
    if vm.digest:
        params["digest"] = vm.digest
    client.request("PUT", f"nodes/{vm.node}/qemu/{vm.vmid}/config", **params)
    log.info("pve.marker.migrated", vmid=vm.vmid, deployment=rules.deployment)
