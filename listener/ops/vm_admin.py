"""``blockhost vm list`` and ``vm destroy``: the operator's view of the inventory and a
by-hand destroy that goes through the same ownership checks as the daemon.
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import asdict, dataclass

from listener.chain.journal import Store
from listener.config import Config
from listener.errors import UserError
from listener.ops.database import open_database
from listener.reconcile.decide import Desired, desired_state
from listener.reconcile.observe import facts_of, ref_of, vm_facts
from listener.reconcile.progress import ProgressStore
from listener.runtime.instance_lock import Holder, unless_listening
from listener.runtime.wiring import build_backend
from provisioner.backend import VMBackend
from provisioner.inventory import Inventory, VMRecord
from provisioner.network_hooks import run_hooks


@dataclass(frozen=True)
class VmRow:
    name: str
    vmid: int
    node: str
    ipv4: str | None
    ipv6: str | None
    state: str
    power: str  # what Proxmox says: running | stopped | missing | unknown
    subscription_id: int | None
    owner_wallet: str | None

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def inventory_rows(config: Config) -> list[VmRow]:
    """`blockhost vm list`: the existing inventory with the configured backend's power view."""
    with closing(open_database(config)) as store:
        return list_vms(Inventory(store.conn), build_backend(config))


def destroy_by_hand(config: Config, name: str, *, execute: bool) -> VMRecord:
    """`blockhost vm destroy`: check that ``name`` may go and, with ``execute``, destroy it;
    the record says what was (or would be) destroyed."""
    with closing(open_database(config)) as store:
        inventory = Inventory(store.conn)
        record = _live_record(inventory, name)
        check_destroyable(store, record, grace_seconds=config.grace_seconds)
        if execute:
            with unless_listening(config.db.path, "vm destroy --execute") as holder:
                _refuse_while_managed(holder, record)
                destroy_vm(store, inventory, build_backend(config), name, config=config)
    return record


def _refuse_while_managed(holder: Holder | None, record: VMRecord) -> None:
    """A running listener manages the subscriptions' VMs; only VMs made by hand go by hand
    beside it."""
    if holder is not None and record.subscription_id is not None:
        raise UserError(f"VM {record.name} serves subscription #{record.subscription_id}, "
                        f"which {holder} manages and destroys itself when due; stop it "
                        "first to destroy the VM by hand")


def _live_record(inventory: Inventory, name: str) -> VMRecord:
    record = inventory.get(name)
    if record is None:
        raise UserError(f"no live VM named {name!r} in the inventory; see `blockhost vm list`")
    return record


def list_vms(inventory: Inventory, backend: VMBackend | None) -> list[VmRow]:
    """Every live inventory record with Proxmox's power state (one listing call)."""
    powers: dict[int, str] | None = None
    if backend is not None:
        powers = {status.vmid: status.power for status in backend.list_managed()}
    rows = []
    for record in inventory.list():
        if powers is None:
            power = "unknown"
        elif record.state == "reserved":
            power = "not built"
        else:
            power = powers.get(record.vmid, "missing")
        rows.append(VmRow(record.name, record.vmid, record.node, record.ipv4, record.ipv6,
                          record.state, power, record.subscription_id, record.owner_wallet))
    return rows


def check_destroyable(store: Store, record: VMRecord, *, grace_seconds: int) -> None:
    """Refuse to destroy a paid subscription's VM: the daemon would only build it again."""
    if record.subscription_id is None:
        return
    sub = store.subscription(record.subscription_id)
    chain_time = store.chain_state().chain_time
    if sub is None or chain_time is None:
        return
    if desired_state(facts_of(sub), chain_time, grace_seconds) is Desired.RUNNING:
        raise UserError(f"VM {record.name} serves subscription #{sub.id}, paid until "
                        f"{sub.expires_at}: the listener would build it again; cancel the "
                        "subscription on chain first (cancelSubscription)")


def destroy_vm(store: Store, inventory: Inventory, backend: VMBackend, name: str, *,
               config: Config | None = None) -> VMRecord:
    """Destroy one VM (all ownership markers verified by the backend) and release its ids.

    A VM already gone on Proxmox is released too; a marker mismatch raises and leaves both
    the VM and the inventory record alone. With ``config``, the ``on_destroy`` network hooks
    run before the release, as in the daemon (the address is not reused while routed)."""
    record = _live_record(inventory, name)
    steps = ProgressStore(store.conn)
    if record.subscription_id is not None:
        steps.journal_step(record.subscription_id, "destroy", "started", "by hand")
    if record.state != "reserved":
        if record.subscription_id is None and inventory.manual(record.id) is None:
            raise UserError(f"VM {name} has neither a subscription nor a `vm create` request, "
                            "so its ownership markers cannot be checked; destroy it in Proxmox "
                            "by hand")
        backend.destroy(ref_of(record))  # a manual VM's markers say sub=manual
        if config is not None:
            hooks = config.network.hooks
            run_hooks(hooks.on_destroy, "destroyed", vm_facts(config, record),
                      timeout=hooks.timeout)
    inventory.release(record.id)
    if record.subscription_id is not None:
        steps.journal_step(record.subscription_id, "destroy", "done", "by hand")
    return record


def stop_vm(inventory: Inventory, backend: VMBackend, name: str) -> VMRecord:
    """Suspend one VM (markers verified by the backend) and record it as stopped."""
    record = _live_record(inventory, name)
    if record.state not in ("reserved", "stopped"):
        backend.stop(ref_of(record))
        inventory.set_state(record.id, "stopped")
    return record
