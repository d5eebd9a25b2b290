"""The VMSpec of an inventory record: one place that turns config + leases into a VM shape.

Used by the reconciler when it builds a subscription's VM and by ``vm export-tf`` when it
writes the Terraform directory of an existing one, so both describe the same VM.
"""

from __future__ import annotations

import secrets

from listener.config import Config, PlanSize
from provisioner.backend import VMSpec, subscription_tag
from provisioner.inventory import Pools, VMRecord


def vm_spec(config: Config, record: VMRecord, pools: Pools, *, size: PlanSize,
            user_data: str | None, template_vmid: int | None = None,
            extra_tags: tuple[str, ...] = ()) -> VMSpec:
    """The VM an inventory record stands for (its ids, size and network); a record without a
    subscription is a manual VM (`vm create`) and gets the ``manual`` marker and tag."""
    px = config.proxmox
    return VMSpec(
        name=record.name, vmid=record.vmid, node=record.node,
        template_vmid=px.template_vmid if template_vmid is None else template_vmid,
        cores=size.cores, memory_mb=size.memory, disk_gb=size.disk,
        ipv4_cidr=f"{record.ipv4}/{pools.ipv4_prefixlen}" if record.ipv4 else None,
        gateway4=pools.ipv4_gateway if record.ipv4 else None,
        ipv6_cidr=f"{record.ipv6}/128" if record.ipv6 else None,
        gateway6=pools.ipv6_gateway if record.ipv6 else None,
        bridge=config.network.bridge, pool=px.pool,
        tags=(px.tag, subscription_tag(record.subscription_id), *extra_tags),
        subscription_id=record.subscription_id,
        username=record.username or config.vm.username, user_data=user_data,
        storage=px.storage, full_clone=px.full_clone,
    )


def cloud_init_variables(config: Config, record: VMRecord, *, token_id: int | None,
                         wallet: str, chain_id: int | None, rpc_url: str) -> dict[str, str]:
    """The variables every cloud-init template may use; unknown values are left out, so a
    template that needs one fails with the renderer's "missing variable" error, not a guess."""
    variables = {
        "VM_NAME": record.name,
        "VM_IP": record.ipv4 or "",
        "VM_IPV6": record.ipv6 or "",
        "SIGNING_HOST": record.ipv6 or record.ipv4 or record.name,
        "USERNAME": record.username or config.vm.username,
        "WALLET_ADDRESS": wallet,
        "RPC_URL": rpc_url,
        "OTP_LENGTH": "6",
        "OTP_TTL": "300",
        "SECRET_KEY": secrets.token_hex(32),  # the VM's own signing-page secret, never stored
    }
    if token_id is not None:
        variables["NFT_TOKEN_ID"] = str(token_id)
    if chain_id:
        variables["CHAIN_ID"] = str(chain_id)
    if config.chain.nft_contract:
        variables["NFT_CONTRACT"] = config.chain.nft_contract
    return variables
