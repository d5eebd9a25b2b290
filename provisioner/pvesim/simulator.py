"""The simulated cluster, assembled: one store, and one object per group of operations.

Composition rather than one class (or mixins): each operation group is a small class that is
handed exactly what it uses (the store, the permission checks, the task engine), so a module
can be read without the other seventy methods, and mypy sees every dependency. The HTTP front
end reaches an operation through its group (``sim.clones.clone``); this class only builds the
parts and tells the task engine which worker finishes which operation.
"""

from __future__ import annotations

from provisioner.pvesim.core.faults import FaultRules
from provisioner.pvesim.core.permissions import Permissions
from provisioner.pvesim.core.store import ClusterStore
from provisioner.pvesim.core.tasks import TaskEngine, Worker
from provisioner.pvesim.endpoints.clone import Clones
from provisioner.pvesim.endpoints.cluster import ClusterReads
from provisioner.pvesim.endpoints.destroy import Destroys
from provisioner.pvesim.endpoints.firewall import Firewalls
from provisioner.pvesim.endpoints.pools import PoolReads
from provisioner.pvesim.endpoints.power import Power
from provisioner.pvesim.endpoints.resize import Resizes
from provisioner.pvesim.endpoints.sim_control import SimControl
from provisioner.pvesim.endpoints.vm_config import ConfigEdits
from provisioner.pvesim.endpoints.vm_create import Creates
from provisioner.pvesim.endpoints.vm_reads import VmReads
from provisioner.pvesim.endpoints.vm_template import Templates
from provisioner.pvesim.sim_config import SimConfig


class Simulator:
    """The whole simulated cluster. Thread-safe: every public operation takes the store's lock."""

    def __init__(self, cfg: SimConfig) -> None:
        self.store = ClusterStore(cfg)
        self.perms = Permissions(self.store)
        self.faults = FaultRules(self.store)
        self.tasks = TaskEngine(self.store)
        self.control = SimControl(self.store)
        self.cluster = ClusterReads(self.store, self.perms)
        self.pools = PoolReads(self.store, self.perms)
        self.vm_reads = VmReads(self.store, self.perms)
        self.clones = Clones(self.store, self.tasks)
        self.creates = Creates(self.store, self.tasks)
        self.templates = Templates(self.store, self.tasks)
        self.configs = ConfigEdits(self.store, self.tasks)
        self.resizes = Resizes(self.store, self.tasks)
        self.power = Power(self.store, self.tasks)
        self.destroys = Destroys(self.store, self.tasks)
        self.firewalls = Firewalls(self.store)
        self._register_workers()

    def _register_workers(self) -> None:
        self.tasks.workers.update({
            "clone": Worker(self.clones.run_task, self.clones.on_failure),
            "create": Worker(self.creates.run_task, self.creates.on_failure),
            "template": Worker(self.templates.run_task),
            "config_post": Worker(self.configs.run_task),
            "resize": Worker(self.resizes.run_task),
            "start": Worker(self.power.run_start),
            "shutdown": Worker(self.power.run_shutdown),
            "stop": Worker(self.power.run_stop),
            "destroy": Worker(self.destroys.run_task),
        })

    def tick(self) -> None:
        """Finish the tasks that are due (the ticker thread and every request call this)."""
        self.tasks.tick()
