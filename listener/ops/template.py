"""``blockhost template build``: the cloud-init template VM every subscription VM clones."""

from __future__ import annotations

from listener.config import Config
from listener.errors import UserError
from listener.runtime.wiring import build_api_backend
from provisioner.proxmox.backend import ProxmoxAPIBackend
from provisioner.proxmox.template_build import TemplateResult, TemplateSpec, build_template


def build_template_vm(config: Config, *, image: str | None, node: str | None,
                      name: str) -> TemplateResult:
    """Create proxmox.template_vmid from ``image`` (default: proxmox.template_image) on
    ``node`` (default: the first configured, else the first online node); idempotent."""
    px = config.proxmox
    image = image or px.template_image
    if not image:
        raise UserError("no cloud image given; pass --image STORAGE:import/FILE.qcow2 or set "
                        "proxmox.template_image")
    api = build_api_backend(config)
    node = node or _default_node(config, api)
    if not node:
        raise UserError("no online Proxmox node to build the template on; pass --node")
    spec = TemplateSpec(vmid=px.template_vmid, node=node, image=image, storage=px.storage,
                        name=name, bridge=config.network.bridge, tag=px.tag)
    try:
        spec.validate()
    except ValueError as exc:
        raise UserError(f"template build: {exc}") from None
    return build_template(api, spec)


def _default_node(config: Config, api: ProxmoxAPIBackend) -> str | None:
    nodes = config.proxmox.nodes
    return (nodes[0] if nodes else None) or next(iter(api.online_nodes()), None)
