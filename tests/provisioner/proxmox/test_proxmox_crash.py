"""Crash recovery and typed errors of ProxmoxAPIBackend against the simulator over HTTPS.

A real worker process runs ``create`` and is SIGKILLed while its clone task runs; a fresh
backend (same journal directory) must converge on the same VMID without a second VM, a leaked
id or a touched foreign VM.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from provisioner.backend import VMRef, VMSpec, parse_marker
from provisioner.errors import (
    AlreadyExists,
    Locked,
    NotFound,
    OwnershipMismatch,
    PermissionDenied,
    PveError,
    TaskFailed,
    Transient,
    VmidTaken,
)
from provisioner.proxmox.backend import ProxmoxAPIBackend
from provisioner.proxmox.clone_journal import CloneJournal
from provisioner.pvesim.launcher import PveSim
from tests.support.crashes import sigkill_when
from tests.support.paths import REPO_ROOT
from tests.support.pve import StartSim, api_backend, start_sim

WORKER = r"""
import json, os, sys
from provisioner.backend import VMSpec
from provisioner.proxmox.backend import ProxmoxAPIBackend
args = json.loads(sys.argv[1])
backend = ProxmoxAPIBackend(args["url"], args["token_id"], os.environ["PVE_TOKEN_SECRET"],
                            verify=args["ca"], pool="blockhost", journal_dir=args["journal"],
                            poll_interval=0.02, task_timeout=60)
print("creating", flush=True)
backend.create(VMSpec(**args["spec"]))
print("created", flush=True)
"""


@pytest.fixture(scope="module")
def slow_sim(module_sims: StartSim) -> PveSim:
    """Pool-scoped token (the production setup) and 0.8 s clones, so a kill lands mid-clone."""
    return module_sims(clone_seconds=0.8)


@pytest.fixture
def sim(slow_sim: PveSim) -> PveSim:
    slow_sim.reset()
    return slow_sim


@pytest.fixture(scope="module")
def fast_sim_module(module_sims: StartSim) -> PveSim:
    """Pool-scoped token and quick clones and tasks, for the tests that need no kill."""
    return module_sims(clone_seconds=0.05, task_seconds=0.02)


@pytest.fixture
def fast(fast_sim_module: PveSim) -> PveSim:
    fast_sim_module.reset()
    return fast_sim_module


def backend(sim: PveSim, journal: Path | None, **kw: Any) -> ProxmoxAPIBackend:
    opts: dict[str, Any] = {"poll_interval": 0.02, "task_timeout": 30, "timeout": 10,
                            "journal_dir": journal}
    return api_backend(sim, **{**opts, **kw})


def spec(vmid: int = 300, sub: int = 7) -> VMSpec:
    return VMSpec(name=f"blockhost-{sub}", vmid=vmid, node="pve1", template_vmid=9001,
                  cores=1, memory_mb=1024, disk_gb=4, ipv4_cidr="10.0.0.7/24",
                  gateway4="10.0.0.1", ipv6_cidr=None, gateway6=None, bridge="vmbr0",
                  pool="blockhost", tags=(), subscription_id=sub, username="u",
                  user_data=None)


def create_until_done(b: ProxmoxAPIBackend, s: VMSpec, attempts: int = 80) -> tuple[VMRef, int]:
    """What the reconciler does: retry a Locked step on a later pass."""
    locked = 0
    for _ in range(attempts):
        try:
            return b.create(s), locked
        except Locked:
            locked += 1
            time.sleep(0.1)
    raise AssertionError("create never converged")


def kill_mid_clone(sim: PveSim, journal: Path, s: VMSpec, tmp_path: Path, *,
                   wait_for_upid: bool = False) -> None:
    """Start a worker process running create(s); SIGKILL it once the clone lock is visible
    (and, with ``wait_for_upid``, once it journalled the clone's UPID)."""
    args = {"url": sim.url, "token_id": sim.token_id, "ca": str(sim.ca_path),
            "journal": str(journal), "spec": s.__dict__}
    env = dict(os.environ, PVE_TOKEN_SECRET=sim.token_secret,
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    with open(tmp_path / "worker.log", "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(args)], env=env,
                                stdout=out, stderr=subprocess.STDOUT)

    def clone_running() -> bool:
        vm = sim.vm(s.vmid)
        if vm is None or vm["lock"] != "clone":
            return False
        pending = CloneJournal(journal).get(s.vmid)
        return not wait_for_upid or (pending is not None and pending.upid is not None)

    sigkill_when(proc, clone_running, what="the clone",
                 output=lambda: (tmp_path / "worker.log").read_text())
    assert b"created" not in (tmp_path / "worker.log").read_bytes()


def owned_vms(sim: PveSim) -> list[dict[str, Any]]:
    return [v for v in sim.state()["vms"] if not v["template"]]


@pytest.mark.parametrize("wait_for_upid", [True, False], ids=["upid-known", "any-moment"])
def test_sigkill_mid_clone_converges_on_the_same_vm(sim: PveSim, tmp_path: Path,
                                                    wait_for_upid: bool) -> None:
    journal = tmp_path / "journal"
    s = spec()
    kill_mid_clone(sim, journal, s, tmp_path, wait_for_upid=wait_for_upid)
    # the journal survived the kill (with the UPID when the answer arrived before the kill)
    pending = CloneJournal(journal).get(s.vmid)
    assert pending is not None and pending.subscription_id == s.subscription_id
    assert pending.upid or not wait_for_upid

    ref, locked = create_until_done(backend(sim, journal), s)
    assert locked >= 1  # the first pass saw our own clone still running and waited for it
    vms = owned_vms(sim)
    assert [v["vmid"] for v in vms] == [s.vmid]
    vm = vms[0]
    assert vm["status"] == "running" and vm["pool"] == "blockhost"
    assert parse_marker(vm["description"]).subscription_id == s.subscription_id
    assert ref.smbios_uuid == vm["smbios_uuid"]
    assert len([t for t in sim.state()["tasks"] if t["type"] == "qmclone"]) == 1
    assert CloneJournal(journal).all() == []


def test_sigkill_mid_clone_whose_task_then_fails_reclones(sim: PveSim, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    s = spec(vmid=301, sub=8)
    sim.inject(op="clone", mode="fail_task", count=1)
    kill_mid_clone(sim, journal, s, tmp_path)
    ref, _ = create_until_done(backend(sim, journal), s)
    clones = [t for t in sim.state()["tasks"] if t["type"] == "qmclone"]
    assert [c["exitstatus"].startswith("clone failed:") for c in clones] == [True, False]
    assert [v["vmid"] for v in owned_vms(sim)] == [301]
    assert sim.vm(301)["status"] == "running" and ref.vmid == 301


def test_lost_clone_answer_then_restart_adopts(sim: PveSim, tmp_path: Path) -> None:
    """The clone POST is accepted but the connection drops; the process 'dies' (a new backend
    object over the same journal) and the next pass waits for and adopts the clone."""
    journal = tmp_path / "journal"
    s = spec(vmid=302, sub=9)
    sim.inject(op="clone", mode="drop_connection", count=1)
    first = backend(sim, journal, task_timeout=0.3)
    with pytest.raises((Transient, Locked)):
        first.create(s)
    ref, _ = create_until_done(backend(sim, journal), s)
    assert [v["vmid"] for v in owned_vms(sim)] == [302]
    assert ref.smbios_uuid == sim.vm(302)["smbios_uuid"]


def test_invisible_foreign_vm_at_our_id_is_skipped_untouched(fast: PveSim, tmp_path: Path) -> None:
    before = fast.create_vm(vmid=303, name="blockhost-10", status="running")  # not in our pool
    b = backend(fast, tmp_path / "journal")
    with pytest.raises(VmidTaken) as info:
        b.create(spec(vmid=303, sub=10))
    assert isinstance(info.value, AlreadyExists) and "303" in str(info.value)
    after = fast.vm(303)
    assert after["config"] == before["config"] and after["status"] == "running"
    assert CloneJournal(tmp_path / "journal").all() == []
    # destroy with our ref never reaches it either: invisible = absent for us
    b.destroy(VMRef(vmid=303, node="pve1", name="blockhost-10", subscription_id=10))
    assert fast.vm(303)["config"] == before["config"]


def test_visible_foreign_vm_in_our_pool_is_skipped(fast: PveSim, tmp_path: Path) -> None:
    fast.create_vm(vmid=304, name="blockhost-11", pool="blockhost", tags="blockhost")
    with pytest.raises(VmidTaken):
        backend(fast, tmp_path / "j").create(spec(vmid=304, sub=11))
    assert fast.vm(304)["description"] is None


def test_stale_journal_entry_of_a_finished_failed_clone_is_cleared(fast: PveSim,
                                                                   tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    s = spec(vmid=305, sub=12)
    fast.inject(op="clone", mode="fail_task", count=1, message="no space left on device")
    b = backend(fast, journal)
    with pytest.raises(TaskFailed):
        b.create(s)
    assert CloneJournal(journal).all() == []
    assert b.create(s).vmid == 305


# ----------------------------------------------------------------------------- typed errors

TASK_CASES = [
    ("start", "VM is locked (backup)", Locked),
    ("start", "can't lock file '/var/lock/qemu-server/lock-320.conf' - got timeout", Locked),
    ("start", "start failed: QEMU exited with code 1", TaskFailed),
    ("start", "Configuration file 'nodes/pve1/qemu-server/320.conf' does not exist", NotFound),
    ("start", "Permission check failed (/vms/320, VM.PowerMgmt)", PermissionDenied),
]


@pytest.mark.parametrize(("op", "message", "expected"), TASK_CASES)
def test_task_exitstatus_maps_to_a_type(fast: PveSim, tmp_path: Path, op: str, message: str,
                                        expected: type[PveError]) -> None:
    b = backend(fast, tmp_path / "j", task_timeout=10)
    ref = b.create(spec(vmid=320, sub=20))
    b.stop(ref)
    fast.inject(op=op, mode="fail_task", message=message, vmid=320)
    with pytest.raises(expected) as info:
        b.start(ref)
    assert type(info.value) is expected
    assert info.value.status == 0 and info.value.upid and message in info.value.message


HTTP_CASES = [
    (500, "VM is locked (clone)", Locked),
    (500, "unable to create VM 330: config file already exists", AlreadyExists),
    (500, "Configuration file 'nodes/pve1/qemu-server/330.conf' does not exist", NotFound),
    (403, "Permission check failed (/vms/330, VM.Audit)", PermissionDenied),
    (595, "Connection refused", Transient),
    (596, "Connection timed out", Transient),
    (503, "service unavailable", Transient),
    (500, "something unexpected", Transient),
]


@pytest.mark.parametrize(("status", "message", "expected"), HTTP_CASES)
def test_http_status_line_maps_to_a_type(fast: PveSim, tmp_path: Path, status: int,
                                         message: str, expected: type[PveError]) -> None:
    b = backend(fast, tmp_path / "j")
    fast.inject(op="cluster_resources", mode="http_error", status=status, message=message)
    with pytest.raises(expected) as info:
        b.status(VMRef(vmid=330, node="pve1", name="x", subscription_id=1))
    assert type(info.value) is expected and info.value.status == status
    assert message in str(info.value)


def test_bad_parameters_are_a_plain_pve_error_with_the_errors_dict(fast: PveSim,
                                                                   tmp_path: Path) -> None:
    b = backend(fast, tmp_path / "j")
    b.create(spec(vmid=331, sub=21))
    with pytest.raises(PveError) as info:
        b._req("PUT", "nodes/pve1/qemu/331/config", cores="many")
    assert info.value.status == 400 and set(info.value.errors or {}) == {"cores"}


# ----------------------------------------------------------------------------- ownership


def test_destroy_marks_then_deletes_and_refuses_a_swapped_instance(fast: PveSim,
                                                                   tmp_path: Path) -> None:
    b = backend(fast, tmp_path / "j")
    ref = b.create(spec(vmid=340, sub=30))
    # same id, same markers, but a different instance (smbios uuid) -> refused, untouched
    fast.update_vm(340, config={"smbios1": "uuid=11111111-2222-3333-4444-555555555555"})
    with pytest.raises(OwnershipMismatch):
        b.destroy(ref)
    assert fast.vm(340)["status"] == "running"
    assert "blockhost-deleting" not in fast.vm(340)["tags"]
    fast.update_vm(340, config={"smbios1": f"uuid={ref.smbios_uuid}"})
    b.destroy(ref)
    assert fast.vm(340) is None
    b.destroy(ref)  # already gone: success


def test_stop_refuses_a_template_or_a_vm_outside_the_pool(fast: PveSim, tmp_path: Path) -> None:
    b = backend(fast, tmp_path / "j", )
    ref = b.create(spec(vmid=341, sub=31))
    fast.update_vm(341, config={"template": 1})
    with pytest.raises(OwnershipMismatch, match="template"):
        b.stop(ref)
    fast.update_vm(341, config={"template": None})
    with pytest.raises(OwnershipMismatch):
        b.stop(replace(ref, subscription_id=32))
    assert fast.vm(341)["status"] == "running"


def test_destroy_during_our_in_flight_clone_waits_instead_of_leaking(sim: PveSim,
                                                                     tmp_path: Path) -> None:
    """Cancelled while the clone of a crashed run still runs: 'absent' would leak the VM."""
    journal = tmp_path / "journal"
    s = spec(vmid=306, sub=13)
    kill_mid_clone(sim, journal, s, tmp_path, wait_for_upid=True)
    b = backend(sim, journal)
    ref = VMRef(vmid=306, node="pve1", name=s.name, subscription_id=13)
    locked = 0
    for _ in range(80):
        try:
            b.destroy(ref)
            break
        except Locked:
            locked += 1
            time.sleep(0.1)
    assert locked >= 1
    assert sim.vm(306) is None and owned_vms(sim) == []
    assert CloneJournal(journal).all() == []


class _CloneEndsBetweenReads(ProxmoxAPIBackend):
    """Forces the interleaving that made the test above flaky: the VM is not visible at the
    first read, and the clone task has finished by the time its state is read."""

    def __init__(self, sim: PveSim, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._sim = sim

    def _own_clone_in_flight(self, ref: VMRef) -> bool:
        deadline = time.monotonic() + 20
        while (vm := self._sim.vm(ref.vmid)) is None or vm["lock"] == "clone":
            assert time.monotonic() < deadline, "the clone never finished"
            time.sleep(0.02)
        return super()._own_clone_in_flight(ref)


def test_destroy_when_the_clone_ends_between_two_reads_still_destroys(sim: PveSim,
                                                                      tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    s = spec(vmid=308, sub=15)
    kill_mid_clone(sim, journal, s, tmp_path, wait_for_upid=True)
    b = _CloneEndsBetweenReads(sim, sim.url, sim.token_id, sim.token_secret,
                               verify=str(sim.ca_path), pool="blockhost", poll_interval=0.02,
                               task_timeout=30, timeout=10, journal_dir=journal)
    b.destroy(VMRef(vmid=308, node="pve1", name=s.name, subscription_id=15))
    assert sim.vm(308) is None and owned_vms(sim) == []
    assert CloneJournal(journal).all() == []


def test_someone_elses_running_clone_at_our_id_is_skipped(fast: PveSim, tmp_path: Path) -> None:
    """With a persistent journal a clone-locked VM we never started is not ours (root token:
    the temporary config is visible)."""
    root = start_sim(tmp_path / "root-sim", pool_scoped=False, clone_seconds=0.05)
    try:
        root.create_vm(vmid=307, lock="clone", config={"name": None, "scsi0": None})
        with pytest.raises(VmidTaken):
            backend(root, tmp_path / "journal").create(spec(vmid=307, sub=14))
        with pytest.raises(Locked):  # without a journal the backend cannot tell: wait
            backend(root, None).create(spec(vmid=307, sub=14))
        assert root.vm(307)["lock"] == "clone"
    finally:
        root.stop()


def test_a_clone_whose_configure_never_ran_can_be_destroyed(fast: PveSim, tmp_path: Path) -> None:
    """Crash between clone and configure: pool + marker, no tags yet -> ours, destroyable;
    but a VM that carries tags without ours is still refused."""
    b = backend(fast, tmp_path / "j")
    s = spec(vmid=308, sub=15)
    b.wait_task(b.request("POST", "nodes/pve1/qemu/9001/clone", newid=308, name=s.name,
                          pool="blockhost", full=1,
                          description=f"managed-by=blockhost;sub=15;name={s.name}"))
    assert fast.vm(308)["tags"] == []
    ref = VMRef(vmid=308, node="pve1", name=s.name, subscription_id=15)
    fast.update_vm(308, config={"tags": "other"})
    with pytest.raises(OwnershipMismatch):
        b.destroy(ref)
    fast.update_vm(308, config={"tags": None})
    b.destroy(ref)
    assert fast.vm(308) is None


def test_vmid_is_free_sees_ids_the_token_cannot(fast: PveSim, tmp_path: Path) -> None:
    fast.create_vm(vmid=309, name="hidden")  # outside our pool: invisible to the token
    b = backend(fast, None)
    assert b.vmid_is_free(310) and not b.vmid_is_free(309) and not b.vmid_is_free(9001)
    assert b.status(VMRef(vmid=309, node="pve1", name="hidden", subscription_id=1)) is None
