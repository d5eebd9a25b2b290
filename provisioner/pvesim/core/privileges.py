"""PVE's privilege names, and the ones the simulated token's roles grant.

The names are PVE 9's (``pveum role list``); the roles are the ones a production set-up gives
a pool-scoped token: PVEVMAdmin on its pool, PVEDatastoreUser on ``/storage``, Sys.Audit on
``/nodes`` and VM.Audit + VM.Clone on the template.
"""

from __future__ import annotations

#: PVEVMAdmin: everything about a VM, nothing about the host.
VM_ADMIN = (
    "VM.Allocate", "VM.Audit", "VM.Backup", "VM.Clone", "VM.Config.CDROM", "VM.Config.CPU",
    "VM.Config.Cloudinit", "VM.Config.Disk", "VM.Config.HWType", "VM.Config.Memory",
    "VM.Config.Network", "VM.Config.Options", "VM.Console", "VM.GuestAgent.Audit",
    "VM.GuestAgent.FileRead", "VM.GuestAgent.FileWrite", "VM.GuestAgent.FileSystemMgmt",
    "VM.GuestAgent.Unrestricted", "VM.Migrate", "VM.PowerMgmt", "VM.Snapshot",
    "VM.Snapshot.Rollback",
)
#: PVEDatastoreUser.
DATASTORE_USER = ("Datastore.AllocateSpace", "Datastore.Audit")
#: What a token may audit on the template it clones from.
TEMPLATE_PRIVS = ("VM.Audit", "VM.Clone")

#: Every privilege the simulator knows (root holds all of them everywhere).
ALL_PRIVS = tuple(sorted({
    *VM_ADMIN, *DATASTORE_USER,
    "Datastore.Allocate", "Datastore.AllocateTemplate", "Group.Allocate", "Mapping.Audit",
    "Mapping.Modify", "Mapping.Use", "Permissions.Modify", "Pool.Allocate", "Pool.Audit",
    "Realm.Allocate", "Realm.AllocateUser", "SDN.Allocate", "SDN.Audit", "SDN.Use",
    "Sys.AccessNetwork", "Sys.Audit", "Sys.Console", "Sys.Incoming", "Sys.Modify",
    "Sys.PowerMgmt", "Sys.Syslog", "User.Modify",
}))
