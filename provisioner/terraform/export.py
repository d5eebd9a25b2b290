"""Write the Terraform directory for a VM that already exists, so an operator can adopt it.

The VM must carry all our ownership markers. Everything the provider would otherwise write -
sizes, CPU model, balloon, disk and cloud-init storage, NIC options, power state - is read from
the live VM (:mod:`.inherit`), so adopting it changes nothing. The document gets an ``import``
block (``<node>/<vmid>``) and ``clone`` is in ``ignore_changes``; the user-data snippet is
referenced by its literal volume id, and only when the VM already uses exactly that volume, so
the first ``terraform apply`` imports the VM and never replaces it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import structlog

from provisioner.backend import VMRef, VMSpec
from provisioner.errors import NotFound, PveError
from provisioner.terraform.backend import TerraformBackend
from provisioner.terraform.inherit import Inherited
from provisioner.terraform.render import VM_ADDRESS, snippet_volume_id
from provisioner.terraform.runner import state_addresses

log = structlog.get_logger(__name__)


def live_spec(spec: VMSpec, node: str, kept: Inherited, snippets_datastore: str,
              deployment: str | None = None) -> VMSpec:
    """``spec`` with the live VM's node and sizes; its user data only if the VM already
    reads the snippet we would reference (else a changed ``user_data_file_id``, which is
    ForceNew, would replace the VM)."""
    user_data = spec.user_data
    if user_data is not None and \
            kept.user_data_volume != snippet_volume_id(snippets_datastore, spec.name, deployment):
        log.warning("tf.export.user_data_not_adopted", name=spec.name,
                    vm_uses=kept.user_data_volume)
        user_data = None
    return dataclasses.replace(
        spec, node=node, cores=kept.live_cores or spec.cores,
        memory_mb=kept.live_memory_mb or spec.memory_mb, disk_gb=kept.disk.size_gb,
        user_data=user_data)


def export_vm(backend: TerraformBackend, spec: VMSpec, ref: VMRef, *,
              out_dir: Path | None = None) -> Path:
    """Verify ``ref`` is ours, then write its directory (default: the backend's directory for
    the VM); returns the directory. ``spec`` supplies what PVE does not store (subscription,
    addresses, user data); everything else comes from the live VM."""
    vm = backend.api.status(ref)
    if vm is None:
        raise NotFound(0, f"VM {ref.vmid} ({ref.name}) does not exist or is not visible to "
                          f"token {backend.api.token_id}")
    backend.check_owned(vm, ref, "export")
    kept = backend.inherited(vm.node, vm.vmid, live=True)
    spec = live_spec(spec, vm.node, kept, backend.settings.snippets_datastore,
                     backend.settings.deployment)
    try:
        template_node: str | None = backend.template_node(spec)
    except PveError:
        template_node = None  # clone is ignored after import; the template may be gone
    directory = Path(out_dir) if out_dir is not None else backend.directory(spec.name)
    in_state = state_addresses(directory)
    adopt = VM_ADDRESS not in in_state
    doc = backend.render(spec, inherited=kept, adopt=adopt, started=vm.power == "running",
                         template_node=template_node,
                         adopt_ipset=backend.ipset_to_import(in_state, vm.node, vm.vmid))
    backend.write(directory, doc)
    log.info("tf.export.done", vmid=vm.vmid, dir=str(directory), adopt=adopt)
    return directory


def read_local_snippet(snippets_dir: Path | None, name: str) -> str | None:
    """The user-data snippet the API backend wrote for ``name`` (``<dir>/snippets/
    <name>-user.yaml``), or None when there is none on this host."""
    if snippets_dir is None:
        return None
    path = Path(snippets_dir) / "snippets" / f"{name}-user.yaml"
    try:
        return path.read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return None
