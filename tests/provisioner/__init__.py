"""provisioner: the VM side."""
