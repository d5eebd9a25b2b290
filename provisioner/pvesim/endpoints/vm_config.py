"""``PUT|POST .../config``: change a VM's config now (PUT) or in a ``qmconfig`` task (POST).

Updates honour the lock (unless root skips it) and the digest (compare-and-set); values are
stored the way PVE normalises them (sorted unique tags, NICs with a MAC).
"""

from __future__ import annotations

from typing import Any

from provisioner.pvesim.core.permissions import check_skiplock
from provisioner.pvesim.core.qemu_conf import config_digest, gen_mac, is_net_key
from provisioner.pvesim.core.records import (
    Action,
    FaultRecord,
    Params,
    TaskRecord,
    VmConfig,
    VmRecord,
)
from provisioner.pvesim.core.store import ClusterStore
from provisioner.pvesim.core.tasks import TaskEngine
from provisioner.pvesim.core.vm_locks import check_lock
from provisioner.pvesim.errors import SimError, TaskError
from provisioner.pvesim.param_verify import is_known_key
from provisioner.pvesim.params import CONFIG_KEYS
from provisioner.pvesim.property_strings import format_net, parse_net, parse_tags, split_list

#: request parameters that are not config updates
_NOT_UPDATES = ("node", "vmid", "delete", "digest", "force", "skiplock", "background_delay")


def _check_request(updates: Params, deletes: list[str]) -> None:
    errors: dict[str, str] = {}
    for key in deletes:
        if not is_known_key(CONFIG_KEYS, key):
            errors["delete"] = f"invalid format - unknown config key '{key}'"
        elif key in updates:
            errors[key] = f"you can't use '-{key}' and '-delete {key}' at the same time"
    if not updates and not deletes:
        raise SimError(500, "no options specified")
    if errors:
        raise SimError(400, "Parameter verification failed.", errors)


def _set(conf: VmConfig, key: str, value: Any) -> None:
    """Store one value as PVE does; an empty tag list or description deletes the key."""
    if key == "tags":
        tags = sorted(set(parse_tags(value)))
        if tags:
            conf["tags"] = ";".join(tags)
        else:
            conf.pop("tags", None)
    elif is_net_key(key):
        net = parse_net(value)
        if not net.get("macaddr"):
            net["macaddr"] = gen_mac()
        conf[key] = format_net(net)
    elif key == "description" and value == "":
        conf.pop("description", None)
    else:
        conf[key] = value


def apply_config(vm: VmRecord, updates: Params, deletes: list[str], digest: str | None,
                 skiplock: bool) -> None:
    check_lock(vm, skiplock)
    if digest and digest != config_digest(vm["config"]):
        raise SimError(500, "detected modified configuration - file changed by other user? "
                            "Try again.")
    conf = vm["config"]
    for key in deletes:
        conf.pop(key, None)
    for key, value in updates.items():
        _set(conf, key, value)


class ConfigEdits:
    def __init__(self, store: ClusterStore, tasks: TaskEngine) -> None:
        self.store = store
        self.tasks = tasks

    def config_update(self, token_id: str, node: str, vmid: int, p: Params, *,
                      background: bool, fault: FaultRecord | None = None) -> str | None:
        """PUT (``background`` False) answers null; POST answers a ``qmconfig`` UPID."""
        with self.store.lock:
            self.store.check_node(node)
            vm = self.store.vm_on(node, vmid)
            skiplock = check_skiplock(token_id, p)
            updates = {k: v for k, v in p.items() if k not in _NOT_UPDATES}
            deletes = split_list(p.get("delete", ""))
            _check_request(updates, deletes)
            if not background:
                apply_config(vm, updates, deletes, p.get("digest"), skiplock)
                self.store.save()
                return None
            action = {"op": "config_post", "vmid": vmid, "updates": updates,
                      "deletes": deletes, "digest": p.get("digest"), "skiplock": skiplock}
            upid = self.tasks.start(token_id, node, "qmconfig", str(vmid),
                                    self.store.cfg.task_seconds, action, fault)
            self.store.save()
            return upid

    def run_task(self, task: TaskRecord, action: Action) -> None:
        vm = self.store.get_vm(action["vmid"])
        if vm is None or vm["node"] != task["node"]:
            raise TaskError(f"Configuration file 'nodes/{task['node']}/qemu-server/"
                            f"{action['vmid']}.conf' does not exist")
        try:
            apply_config(vm, action["updates"], action["deletes"], action["digest"],
                         action["skiplock"])
        except SimError as exc:
            raise TaskError(exc.message) from None
