""":class:`provisioner.backend.VMBackend` driven by Terraform (bpg/proxmox), one directory
and one state per VM.

Terraform's identity for a VM is its ``vm_id`` alone, and PVE reuses VMIDs, so a stale state
entry could make Terraform "fix" or destroy a VM that is no longer ours. Therefore every
step first looks at the VM through the Proxmox API (read-only, with the same pool-scoped
token) and checks all ownership markers - pool, tags, description marker, smbios uuid -
before Terraform runs. A mismatch raises and Terraform is not started.

What a VM keeps from its template (CPU model, balloon, disk and cloud-init storage, NIC
options) is read through the same API and rendered explicitly (:mod:`.inherit`): from the
template for a new clone, from the VM itself when it already exists, so re-rendering an
existing VM never reverts it to the template.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import structlog
from structlog.typing import FilteringBoundLogger

from provisioner.backend import (
    VMRef,
    VMSpec,
    VMStatus,
    ownership_problems,
    parse_marker,
)
from provisioner.errors import Locked, NotFound, OwnershipMismatch, Transient, VmidTaken
from provisioner.proxmox.backend import ProxmoxAPIBackend
from provisioner.proxmox.firewall import TenantFirewall
from provisioner.terraform.firewall_blocks import IPSET_ADDRESS
from provisioner.terraform.inherit import Inherited, inherited_from
from provisioner.terraform.layout import archive, scrub_archives, vm_dir, write_main
from provisioner.terraform.render import (
    MAIN_FILE,
    VM_ADDRESS,
    VM_NAME,
    VM_RESOURCE,
    RenderSettings,
    render_vm,
    to_json_bytes,
)
from provisioner.terraform.runner import TerraformError, TerraformRunner, state_addresses
from provisioner.terraform.schema import validate

log = structlog.get_logger(__name__)


class TerraformBackend:
    """VMs as per-VM Terraform directories under ``root``; reads go through ``api``."""

    def __init__(self, *, api: ProxmoxAPIBackend, runner: TerraformRunner, root: Path,
                 settings: RenderSettings) -> None:
        if settings.tag != api.tag or settings.deployment != api.deployment:
            raise ValueError("render settings and the API backend must use the same tag "
                             "and deployment id")
        self.api = api
        self.runner = runner
        self.root = Path(root)
        self.settings = settings

    def __repr__(self) -> str:
        return f"TerraformBackend(root={str(self.root)!r}, api={self.api!r})"

    @property
    def pool(self) -> str:
        return self.api.pool

    @property
    def tag(self) -> str:
        return self.api.tag

    @property
    def deployment(self) -> str | None:
        return self.api.deployment

    def directory(self, name: str) -> Path:
        return vm_dir(self.root, name)

    # ------------------------------------------------------------------ helpers

    def check_owned(self, vm: VMStatus, ref: VMRef, action: str) -> None:
        problems = ownership_problems(vm, pool=self.pool, tag=self.tag,
                                      deployment=self.api.deployment,
                                      subscription_id=ref.subscription_id, name=ref.name,
                                      smbios_uuid=ref.smbios_uuid, require_tags=True)
        if problems:
            log.warning("tf.ownership.mismatch", vmid=vm.vmid, action=action, problems=problems)
            raise OwnershipMismatch(0, f"refusing to {action} VM {vm.vmid}: not ours ("
                                       + "; ".join(problems) + ")")

    def write(self, directory: Path, doc: dict[str, Any]) -> bool:
        """Schema-check ``doc`` and write it as the directory's ``main.tf.json``."""
        problems = validate(doc)
        if problems:  # a renderer bug or a source VM setting the provider refuses: write nothing
            raise ValueError("rendered Terraform document violates the bpg/proxmox schema: "
                             + "; ".join(problems[:5]))
        return write_main(directory, to_json_bytes(doc))

    def _apply(self, directory: Path) -> None:
        self.runner.ensure_init(directory)
        result = self.runner.apply(directory)
        log.info("tf.apply.done", dir=str(directory), changes=result.change_summary())

    def template_node(self, spec: VMSpec) -> str:
        tpl = self.api.status(VMRef(vmid=spec.template_vmid, node=spec.node,
                                    name=f"template-{spec.template_vmid}", subscription_id=0))
        if tpl is None:
            raise NotFound(0, f"template VM {spec.template_vmid} not found (or not visible to "
                              f"token {self.api.token_id})")
        return tpl.node

    def inherited(self, node: str, vmid: int, *, live: bool) -> Inherited:
        """What a VM keeps from VM ``vmid`` on ``node`` (read-only GET of its config);
        ``live``: that VM is the one rendered (it exists), not its template."""
        config = self.api.get_object(f"nodes/{node}/qemu/{vmid}/config")
        return inherited_from(config, disk_interface=self.settings.disk_interface, live=live)

    # ------------------------------------------------------------------ VMBackend

    def render(self, spec: VMSpec, *, inherited: Inherited, adopt: bool = False,
               started: bool = True, template_node: str | None = None,
               adopt_ipset: bool = False) -> dict[str, Any]:
        """The document ``create`` would write (no I/O)."""
        return render_vm(spec, self.settings, inherited=inherited, started=started,
                         adopt=adopt, template_node=template_node, adopt_ipset=adopt_ipset)

    def ipset_to_import(self, in_state: list[str], node: str, vmid: int) -> bool:
        """Whether the VM's IP set exists in PVE but not in the state (its resource
        addresses ``in_state``): a VM made by the API backend, or adopted after its state
        was lost, already has one."""
        return (IPSET_ADDRESS not in in_state
                and TenantFirewall(self.api).has_ipset(node, vmid))

    def create(self, spec: VMSpec) -> VMRef:
        if spec.pool != self.pool:
            raise ValueError(f"spec pool {spec.pool!r} differs from the backend pool "
                             f"{self.pool!r}")
        directory = self.directory(spec.name)
        ref = VMRef(vmid=spec.vmid, node=spec.node, name=spec.name,
                    subscription_id=spec.subscription_id)
        blog = log.bind(vmid=spec.vmid, name=spec.name, sub=spec.subscription_id)
        with self.runner.dir_lock(directory):
            existing = self.api.status(ref)
            addresses = state_addresses(directory)
            in_state = VM_ADDRESS in addresses
            adopt = False
            if existing is not None:
                self._check_adoptable(existing, spec, blog)
                adopt = not in_state
                if adopt:
                    blog.info("tf.create.adopt", node=existing.node)
            spec, kept, template_node = self._source(spec, existing)
            adopt_ipset = existing is not None and self.ipset_to_import(addresses, spec.node,
                                                                         spec.vmid)
            doc = self.render(spec, inherited=kept, adopt=adopt, template_node=template_node,
                              adopt_ipset=adopt_ipset)
            self.write(directory, doc)
            self._apply_create(directory, spec, unseen=existing is None and not in_state)
        vm = self.api.status(ref)
        if vm is None:
            raise Transient(0, f"terraform apply finished but VM {spec.vmid} is not visible")
        blog.info("tf.create.done", node=vm.node, smbios_uuid=vm.smbios_uuid)
        return VMRef(vmid=spec.vmid, node=vm.node, name=spec.name,
                     subscription_id=spec.subscription_id, smbios_uuid=vm.smbios_uuid)

    def _source(self, spec: VMSpec,
                existing: VMStatus | None) -> tuple[VMSpec, Inherited, str]:
        """The spec to render (an existing VM stays on its node), what it keeps and from
        where (the VM itself if it exists, else the template), and the template's node."""
        template_node = self.template_node(spec)
        if existing is None:
            return spec, self.inherited(template_node, spec.template_vmid, live=False), \
                template_node
        kept = self.inherited(existing.node, spec.vmid, live=True)
        return dataclasses.replace(spec, node=existing.node), kept, template_node

    def _check_adoptable(self, existing: VMStatus, spec: VMSpec,
                         blog: FilteringBoundLogger) -> None:
        """Raise unless the VM already at ``spec.vmid`` is ours to finish."""
        if existing.lock == "clone" and parse_marker(existing.description) is None:
            # maybe our own clone from a crashed run, still copying: decide later
            raise Locked(0, f"VM {spec.vmid} is being cloned (lock: clone); retry later")
        problems = ownership_problems(existing, pool=self.pool, tag=self.tag,
                                      deployment=self.api.deployment,
                                      subscription_id=spec.subscription_id,
                                      name=spec.name, smbios_uuid=None, require_tags=False)
        if problems:
            blog.warning("tf.create.vmid_taken", problems=problems)
            raise VmidTaken(0, f"VMID {spec.vmid} is taken by a VM that is not "
                               "ours (" + "; ".join(problems) + ")")
        if existing.lock:
            raise Locked(0, f"VM {spec.vmid} is locked ({existing.lock})")

    def _apply_create(self, directory: Path, spec: VMSpec, *, unseen: bool) -> None:
        """Apply; ``unseen``: neither visible nor in our state, so an "already exists" from
        the provider means the id is held by a VM our token cannot see: never ours."""
        try:
            self._apply(directory)
        except TerraformError as exc:
            if unseen and "already exists" in str(exc).lower():
                raise VmidTaken(0, f"VMID {spec.vmid} already exists and is not visible "
                                   "to this token (not ours)") from None
            raise

    def _set_power(self, ref: VMRef, started: bool, action: str) -> None:
        directory = self.directory(ref.name)
        with self.runner.dir_lock(directory):
            vm = self.api.status(ref)
            if vm is None:
                raise NotFound(0, f"VM {ref.vmid} ({ref.name}) does not exist")
            self.check_owned(vm, ref, action)
            if vm.lock:
                raise Locked(0, f"VM {vm.vmid} is locked ({vm.lock})")
            main = directory / MAIN_FILE
            if not main.exists() or VM_ADDRESS not in state_addresses(directory):
                raise TerraformError(f"VM {ref.name} is not managed by Terraform here (no "
                                     f"state in {directory}); adopt it with `blockhost vm "
                                     f"export-tf {ref.name}` and `terraform apply`")
            doc = json.loads(main.read_text(encoding="utf-8"))
            doc["resource"][VM_RESOURCE][VM_NAME]["started"] = started
            doc.pop("import", None)
            self.write(directory, doc)
            self._apply(directory)
        log.info(f"tf.{action}.done", vmid=ref.vmid)

    def start(self, ref: VMRef) -> None:
        self._set_power(ref, True, "start")

    def stop(self, ref: VMRef, *, timeout: int = 60) -> None:
        # the shutdown timeout is part of the rendered config (timeout_shutdown_vm) so that
        # an unchanged VM renders identical bytes; ``timeout`` is accepted for the interface
        self._set_power(ref, False, "stop")

    def destroy(self, ref: VMRef) -> None:
        directory = self.directory(ref.name)
        blog = log.bind(vmid=ref.vmid, name=ref.name)
        with self.runner.dir_lock(directory):
            vm = self.api.status(ref)
            addresses = state_addresses(directory)
            if vm is None:
                self._forget_absent(directory, addresses)
                blog.info("tf.destroy.absent")
            else:
                self._destroy_ours(vm, ref, directory, addresses, blog)
            moved = archive(directory, ref.vmid) if directory.exists() else None
        blog.info("tf.destroy.done", archived=str(moved) if moved else None)

    def _forget_absent(self, directory: Path, addresses: list[str]) -> None:
        """The VM is gone, or not visible to our token - which may mean the VMID now belongs
        to someone else. Never let Terraform touch it: forget it, then clean up the rest of
        this directory's resources (the snippet)."""
        if VM_ADDRESS in addresses:
            self.runner.state_rm(directory, VM_ADDRESS)
        if len(addresses) > (VM_ADDRESS in addresses):
            self.runner.ensure_init(directory)
            self.runner.destroy(directory)

    def _destroy_ours(self, vm: VMStatus, ref: VMRef, directory: Path, addresses: list[str],
                      blog: FilteringBoundLogger) -> None:
        self.check_owned(vm, ref, "destroy")
        if vm.lock:
            raise Locked(0, f"VM {vm.vmid} is locked ({vm.lock})")
        if VM_ADDRESS in addresses:
            self.runner.ensure_init(directory)
            self.runner.destroy(directory)
        else:
            # ours (all markers match) but unknown to this directory's state, e.g. a crash
            # before terraform wrote its state: the API backend destroys it with the same
            # checks.
            blog.info("tf.destroy.not_in_state_using_api")
            self.api.destroy(ref)
        if self.api.status(ref) is not None:
            raise Transient(0, f"VM {ref.vmid} still exists after destroy")

    def status(self, ref: VMRef) -> VMStatus | None:
        return self.api.status(ref)

    def list_managed(self) -> list[VMStatus]:
        return self.api.list_managed()


def build_terraform_backend(api: ProxmoxAPIBackend, *, token_secret: str, root: Path,
                            snippets_datastore: str = "local",
                            cloudinit_datastore: str | None = None,
                            lock_timeout_s: int = 120,
                            plugin_cache_dir: Path | None = None) -> TerraformBackend:
    """A TerraformBackend talking to the same endpoint with the same token as ``api``.

    The token reaches the provider as ``PROXMOX_VE_API_TOKEN`` in Terraform's environment;
    a CA file (``verify`` = path) as ``SSL_CERT_FILE``; ``verify=False`` renders
    ``insecure = true``."""
    env = {"PROXMOX_VE_API_TOKEN": f"{api.token_id}={token_secret}"}
    if isinstance(api.verify, str):
        env["SSL_CERT_FILE"] = api.verify
    runner = TerraformRunner(env=env, secrets=[token_secret], lock_timeout_s=lock_timeout_s,
                             plugin_cache_dir=plugin_cache_dir)
    settings = RenderSettings(endpoint=api.api_url, insecure=api.verify is False, tag=api.tag,
                              deployment=api.deployment,
                              snippets_datastore=snippets_datastore,
                              cloudinit_datastore=cloudinit_datastore)
    for old in scrub_archives(root):  # archives of an older version kept user data and state
        log.info("tf.archive.scrubbed", path=str(old))
    return TerraformBackend(api=api, runner=runner, root=root, settings=settings)
