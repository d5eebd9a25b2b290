"""provisioner.pvesim: the PVE API simulator itself."""
