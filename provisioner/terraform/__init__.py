"""The Terraform backend: one directory per VM with a ``main.tf.json`` for bpg/proxmox.

- :mod:`.render`  builds the document (deterministic bytes; chain strings can never become
  Terraform interpolation);
- :mod:`.schema`  checks it against ``bpg_proxmox.schema.json`` (every attribute we emit);
- :mod:`.runner`  runs ``terraform init/apply/destroy`` in a VM's directory safely;
- :mod:`.backend` implements :class:`provisioner.backend.VMBackend` on top, with ownership
  checks through the Proxmox API (read-only) before anything destructive;
- :mod:`.export`  writes the directory for an existing VM so an operator can adopt it.

Why per-VM directories: the reference system kept every VM in one shared state and used
``-target`` (its bug 21), so GC and provisioning fought over one lock and an untargeted apply
could touch every VM. Here each VM has its own state, lock and history.
"""
