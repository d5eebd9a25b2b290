"""``blockhost markers migrate``: give the VMs made before deployment ids our id.

Such a VM carries the old marker ``managed-by=<tag>;sub=<id>;name=<name>``, which names no
deployment, so the daemon no longer adopts, stops or destroys it (it could be another
deployment's). It becomes ours only here, and only when our inventory knows it: a live record
with the same VMID, name and subscription (and smbios uuid, when recorded), in our pool. Anything
else is listed as skipped, with the reason, and left alone.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from listener.chain.deployment import bind_database, check_database
from listener.config import Config
from listener.errors import UserError
from listener.ops.database import open_database
from listener.runtime.wiring import build_api_backend, config_deployment
from provisioner.backend import Marker, parse_marker
from provisioner.errors import PveError
from provisioner.inventory import Inventory, VMRecord
from provisioner.proxmox.backend import ProxmoxAPIBackend
from provisioner.proxmox.ownership import write_deployment_marker
from provisioner.proxmox.vm_view import VMView, tagged_views


@dataclass(frozen=True)
class MarkerOutcome:
    """What migrate did (or would do) to one VM carrying our tag."""

    vmid: int
    name: str
    action: str  # "migrated" | "would migrate" | "already ours" | "skipped"
    reason: str

    def line(self) -> str:
        return f"{self.action}: VM {self.vmid} ({self.name}): {self.reason}"


@dataclass(frozen=True)
class MigrateReport:
    deployment: str
    dry_run: bool
    outcomes: list[MarkerOutcome]

    def as_dict(self) -> dict[str, object]:
        return {"deployment": self.deployment, "dry_run": self.dry_run,
                "vms": [asdict(o) for o in self.outcomes]}


def migrate_markers(config: Config, *, dry_run: bool) -> MigrateReport:
    """Add our deployment id to every old-marker VM our inventory knows (see the module)."""
    store = open_database(config)
    try:
        deployment = config_deployment(config)
        if deployment is None:
            raise UserError("this config has no deployment id to write: set "
                            "chain.subscription_contract and chain.chain_id first")
        if dry_run:
            check_database(store.conn, deployment, config.db.path)
        else:
            bind_database(store.conn, deployment, config.db.path)
        api = build_api_backend(config, chain_id=deployment.chain_id)
        records = {r.vmid: r for r in Inventory(store.conn).list()}
        outcomes = [_migrate_one(api, vm, records.get(vm.vmid), config, dry_run=dry_run)
                    for vm in tagged_views(api, api.tag)]
    finally:
        store.close()
    return MigrateReport(deployment.id, dry_run, outcomes)


def plan_one(api: ProxmoxAPIBackend, vm: VMView, record: VMRecord | None) -> MarkerOutcome:
    """What migrate would do to ``vm`` (read-only: doctor's start check asks the same)."""
    marker = parse_marker(vm.description)
    if marker is not None and marker.deployment == api.deployment \
            and api.rules.other_deployment(vm) is None:
        return MarkerOutcome(vm.vmid, vm.name, "already ours", f"deployment {api.deployment}")
    reason = _why_not(api, vm, marker, record)
    if reason is not None:
        return MarkerOutcome(vm.vmid, vm.name, "skipped", reason)
    assert marker is not None
    return MarkerOutcome(vm.vmid, vm.name, "would migrate", _matched(marker))


def plan_old_markers(api: ProxmoxAPIBackend,
                     records: dict[int, VMRecord]) -> list[MarkerOutcome]:
    """The plan for the VMs carrying our tag and our old marker (no deployment id) only."""
    return [plan_one(api, vm, records.get(vm.vmid)) for vm in tagged_views(api, api.tag)
            if _has_old_marker(api, vm)]


def _has_old_marker(api: ProxmoxAPIBackend, vm: VMView) -> bool:
    marker = parse_marker(vm.description)
    return marker is not None and marker.managed_by == api.tag and marker.deployment is None \
        and api.rules.other_deployment(vm) is None


def _migrate_one(api: ProxmoxAPIBackend, vm: VMView, record: VMRecord | None, config: Config,
                 *, dry_run: bool) -> MarkerOutcome:
    planned = plan_one(api, vm, record)
    if dry_run or planned.action != "would migrate":
        return planned
    marker = parse_marker(vm.description)
    assert marker is not None
    try:
        write_deployment_marker(api, vm, api.rules, marker.subscription_id)
    except PveError as exc:
        return MarkerOutcome(vm.vmid, vm.name, "skipped",
                             f"Proxmox refused the change ({exc.message}); run again")
    _update_terraform(config, api, vm, marker)
    return MarkerOutcome(vm.vmid, vm.name, "migrated", _matched(marker))


def _matched(marker: Marker) -> str:
    sub = "manual" if marker.subscription_id is None else f"#{marker.subscription_id}"
    return f"old marker matches our inventory (VMID, name, subscription {sub})"


def _why_not(api: ProxmoxAPIBackend, vm: VMView, marker: Marker | None,
             record: VMRecord | None) -> str | None:
    """Why ``vm`` must not get our id (None: it may)."""
    other = api.rules.other_deployment(vm)
    if other is not None:
        return f"belongs to deployment {other}"
    if marker is None or marker.managed_by != api.tag:
        return "no ownership marker of ours in the description"
    if record is None:
        return f"VMID {vm.vmid} is not in our inventory (another deployment's VM, or forgotten: " \
               "see `blockhost recover`)"
    checks = [
        (vm.pool == api.pool, f"pool is {vm.pool!r}, expected {api.pool!r}"),
        (vm.name == record.name == marker.name,
         f"name {vm.name!r} / marker {marker.name!r} differ from our record {record.name!r}"),
        (marker.subscription_id == record.subscription_id,
         f"marker sub={marker.subscription_id} differs from our record's "
         f"{record.subscription_id}"),
        (record.smbios_uuid is None or record.smbios_uuid == vm.smbios_uuid,
         "smbios uuid differs from our record (another VM instance)"),
        (not vm.is_template, "is a template"),
    ]
    return next((text for ok, text in checks if not ok), None)


def _update_terraform(config: Config, api: ProxmoxAPIBackend, vm: VMView,
                      marker: Marker) -> None:
    """With the Terraform backend, the VM's main.tf.json gets the same marker and tag, or
    its next apply would write the old ones back."""
    if config.proxmox.backend != "terraform":
        return
    from provisioner.terraform.layout import vm_dir, write_main
    from provisioner.terraform.render import MAIN_FILE, VM_NAME, VM_RESOURCE, to_json_bytes

    directory = vm_dir(config.proxmox.terraform_dir, vm.name)
    main = directory / MAIN_FILE
    if not main.exists():
        return
    doc = json.loads(main.read_text(encoding="utf-8"))
    resource = doc["resource"][VM_RESOURCE][VM_NAME]
    resource["description"] = api.rules.marker(marker.subscription_id, vm.name)
    resource["tags"] = sorted({*resource.get("tags", []), *api.rules.own_tags(
        marker.subscription_id)})
    write_main(directory, to_json_bytes(doc))
