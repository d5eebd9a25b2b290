"""provisioner.proxmox against the PVE simulator."""
