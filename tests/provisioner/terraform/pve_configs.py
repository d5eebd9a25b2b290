"""PVE VM configs (``GET /nodes/{node}/qemu/{vmid}/config``) the Terraform tests render against:
the template our ``template build`` makes, and VMs as the API backend leaves them."""

from __future__ import annotations

from typing import Any

from provisioner.terraform.inherit import Inherited, inherited_from

#: Our own template (provisioner/proxmox/template_build.py): no cpu type, no balloon.
TEMPLATE_CONFIG: dict[str, Any] = {
    "name": "blockhost-template", "template": 1, "cores": 2, "sockets": 1, "memory": "2048",
    "scsihw": "virtio-scsi-pci", "scsi0": "local-lvm:base-9001-disk-0,size=2G",
    "ide2": "local-lvm:vm-9001-cloudinit,media=cdrom", "boot": "order=scsi0",
    "net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0", "agent": "1", "ostype": "l26",
    "serial0": "socket", "vga": "serial0", "ipconfig0": "ip=dhcp",
}

#: An operator's template with choices of its own the provider's defaults would overwrite.
TUNED_TEMPLATE_CONFIG: dict[str, Any] = {
    **TEMPLATE_CONFIG, "cpu": "x86-64-v2-AES,flags=+aes;-pcid", "sockets": 2, "numa": 1,
    "balloon": 1024, "cpuunits": 200, "scsi0": "ceph:base-9001-disk-0,size=10G,discard=on,ssd=1",
    "ide2": "cephfs:vm-9001-cloudinit,media=cdrom",
    "net0": "e1000=BC:24:11:00:00:02,bridge=vmbr1,firewall=1,tag=30,mtu=1450",
}


def live_config(vmid: int = 4200, *, cores: int = 2, memory_mb: int = 2048, disk_gb: int = 20,
                cicustom: str | None = "user=local:snippets/blockhost-42-user.yaml",
                **extra: Any) -> dict[str, Any]:
    """A VM the API backend cloned from :data:`TEMPLATE_CONFIG` and configured."""
    config: dict[str, Any] = {
        **TEMPLATE_CONFIG, "name": "blockhost-42", "cores": cores, "memory": str(memory_mb),
        "scsi0": f"local-lvm:vm-{vmid}-disk-0,size={disk_gb}G",
        "ide2": f"local-lvm:vm-{vmid}-cloudinit,media=cdrom",
        "net0": "virtio=BC:24:11:AA:BB:CC,bridge=vmbr0", "ciuser": "admin",
        "ipconfig0": "ip=10.0.0.42/24,gw=10.0.0.1", "tags": "blockhost;sub-42",
    }
    config.pop("template")
    if cicustom is not None:
        config["cicustom"] = cicustom
    config.update(extra)
    return config


TEMPLATE: Inherited = inherited_from(TEMPLATE_CONFIG, disk_interface="scsi0", live=False)
