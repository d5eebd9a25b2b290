"""A faithful Proxmox VE API simulator for tests and the demo (written for this project).

Run it with ``blockhost-pvesim`` (see :mod:`provisioner.pvesim.__main__`) or start it from
Python with :func:`provisioner.pvesim.launcher.start_pvesim`.
"""
