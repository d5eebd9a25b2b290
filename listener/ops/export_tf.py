"""``blockhost vm export-tf``: a Terraform directory for an existing VM, so Terraform adopts it."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import cast

from listener.config import Config
from listener.errors import UserError
from listener.ops.database import open_database
from listener.reconcile.observe import ref_of
from listener.reconcile.vm_spec import vm_spec
from listener.runtime.wiring import build_backend, build_terraform_backend_for, pools_from_config
from provisioner.inventory import Inventory
from provisioner.proxmox.backend import ProxmoxAPIBackend
from provisioner.terraform.backend import TerraformBackend
from provisioner.terraform.export import export_vm, read_local_snippet


def export_terraform_dir(config: Config, name: str, *, out_dir: Path | None) -> Path:
    """Write the directory of subscription VM ``name`` (default: proxmox.terraform_dir/NAME)
    after its ownership markers are verified; returns the directory."""
    with closing(open_database(config)) as store:
        record = Inventory(store.conn).get(name)
        sub = (store.subscription(record.subscription_id)
               if record is not None and record.subscription_id is not None else None)
    if record is None or record.state == "reserved" or record.subscription_id is None:
        raise UserError(f"no created VM named {name!r} with a subscription in the "
                        "inventory; check the name with `blockhost status`")
    backend = _terraform_backend(config)
    size = config.plan_size(sub.plan_id) if sub is not None else config.plans["default"]
    spec = vm_spec(config, record, pools_from_config(config), size=size,
                   user_data=read_local_snippet(config.proxmox.snippets_dir, record.name))
    return export_vm(backend, spec, ref_of(record), out_dir=out_dir)


def _terraform_backend(config: Config) -> TerraformBackend:
    """The configured backend, or Terraform over the API backend when that is configured."""
    backend = build_backend(config)
    if isinstance(backend, TerraformBackend):
        return backend
    # unless proxmox.backend is terraform, build_backend returns the API backend
    return build_terraform_backend_for(config, cast(ProxmoxAPIBackend, backend))
