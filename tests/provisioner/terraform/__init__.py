"""provisioner.terraform: rendering, runner and backend."""
