"""ProxmoxAPIBackend against the real simulator over HTTPS (unchanged proxmoxer)."""

from __future__ import annotations

import re
import shutil
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from provisioner.backend import (
    VMBackend,
    VMRef,
    VMSpec,
    marker_for,
    ownership_problems,
    parse_marker,
)
from provisioner.errors import (
    AlreadyExists,
    Locked,
    NotFound,
    OwnershipMismatch,
    PermissionDenied,
    PveError,
    TaskFailed,
    Transient,
    classify,
)
from provisioner.proxmox.backend import ProxmoxAPIBackend
from provisioner.proxmox.encoders import build_ipconfig, encode_sshkeys
from provisioner.pvesim.launcher import PveSim
from tests.support.paths import REPO_ROOT
from tests.support.pve import StartSim, api_backend

USER_DATA = ("#cloud-config\nhostname: sub-42\nwrite_files:\n  - path: /etc/motd\n"
             "    content: \"héllo; name=x,y 'quoted' ✓\"\n")


@dataclass
class Env:
    sim: PveSim
    backend: ProxmoxAPIBackend
    snippets: Path
    kind: str


def make_backend(sim: PveSim, snippets: Path | None, **kw: Any) -> ProxmoxAPIBackend:
    opts: dict[str, Any] = {"snippets_dir": snippets, "poll_interval": 0.02, "task_timeout": 20,
                            "timeout": 10}
    return api_backend(sim, **{**opts, **kw})


@pytest.fixture(scope="module")
def sims(module_sims: StartSim) -> dict[str, PveSim]:
    """Local: every test here runs under both token kinds, so one simulator per kind (reset
    before every test), a root token and a token that only holds privileges on the pool (the
    production setup). Storage 'local' is a real directory so the simulator checks cicustom
    snippets at start."""
    return {kind: module_sims(pool_scoped=kind == "pool", snippets=True, clone_seconds=0.1)
            for kind in ("root", "pool")}


@pytest.fixture(params=["root", "pool"])
def env(request: pytest.FixtureRequest, sims: dict[str, PveSim]) -> Env:
    sim = sims[request.param]
    snippets = sim.snippets_dir
    assert snippets is not None
    sim.reset()
    shutil.rmtree(snippets / "snippets", ignore_errors=True)
    return Env(sim, make_backend(sim, snippets), snippets, request.param)


def make_spec(vmid: int = 200, sub: int = 42, **kw: Any) -> VMSpec:
    base = VMSpec(
        name=f"blockhost-{sub}", vmid=vmid, node="pve2", template_vmid=9001,
        cores=2, memory_mb=3072, disk_gb=20,
        ipv4_cidr="10.10.0.20/24", gateway4="10.10.0.1",
        ipv6_cidr="2001:db8::20/64", gateway6="2001:db8::1",
        bridge="vmbr0", pool="blockhost", tags=("plan-basic",),
        subscription_id=sub, username="alice", user_data=USER_DATA,
    )
    return replace(base, **kw)


def clone_tasks(sim: PveSim) -> list[dict[str, Any]]:
    return [t for t in sim.state()["tasks"] if t["type"] == "qmclone"]


# ----------------------------------------------------------------------------- create


def test_backend_satisfies_the_protocol(pvesim: PveSim) -> None:
    assert isinstance(make_backend(pvesim, None), VMBackend)


def test_create_provisions_a_running_vm_with_all_markers(env: Env) -> None:
    spec = make_spec()
    ref = env.backend.create(spec)

    vm = env.sim.vm(200)
    assert vm is not None
    assert ref == VMRef(vmid=200, node="pve2", name="blockhost-42", subscription_id=42,
                        smbios_uuid=vm["smbios_uuid"])
    assert ref.smbios_uuid and ref.smbios_uuid != env.sim.vm(9001)["smbios_uuid"]
    assert vm["node"] == "pve2" and vm["status"] == "running" and vm["lock"] is None
    assert vm["pool"] == "blockhost"
    assert vm["tags"] == ["blockhost", "plan-basic", "sub-42"]
    assert vm["description"].split("\n")[0] == "managed-by=blockhost;sub=42;name=blockhost-42"
    conf = vm["config"]
    assert conf["name"] == "blockhost-42"
    assert conf["cores"] == 2 and str(conf["memory"]) == "3072"
    template_mac = env.sim.vm(9001)["config"]["net0"].split(",")[0]
    assert re.fullmatch(r"virtio=BC:24:11:[0-9A-F:]{8},bridge=vmbr0,firewall=1", conf["net0"])
    assert conf["net0"].split(",")[0] != template_mac
    assert conf["ipconfig0"] == "ip=10.10.0.20/24,gw=10.10.0.1,ip6=2001:db8::20/64,gw6=2001:db8::1"
    assert conf["ciuser"] == "alice"
    assert conf["cicustom"] == "user=local:snippets/blockhost-42-user.yaml"
    assert conf["scsi0"].endswith(",size=20G")
    snippet = env.snippets / "snippets" / "blockhost-42-user.yaml"
    assert snippet.read_text(encoding="utf-8") == USER_DATA
    assert stat.S_IMODE(snippet.stat().st_mode) == 0o600  # holds a secret; PVE reads as root
    # the simulator read the snippet when the VM booted
    assert vm["boot"]["user_data"] == USER_DATA
    assert len(clone_tasks(env.sim)) == 1

    status = env.backend.status(ref)
    assert status is not None
    assert (status.power, status.node, status.pool, status.lock) == ("running", "pve2", "blockhost", None)
    assert status.smbios_uuid == ref.smbios_uuid and "sub-42" in status.tags


def test_create_is_idempotent_and_adopts_a_half_built_vm(env: Env) -> None:
    spec = make_spec()
    first = env.backend.create(spec)
    assert env.backend.create(spec) == first
    assert len(clone_tasks(env.sim)) == 1  # no second clone

    # a crash after the clone, before the config: the next create adopts the VM
    spec2 = make_spec(vmid=201, sub=43)
    env.sim.inject(op="config_put", mode="http_error", status=500, message="got timeout")
    with pytest.raises(Transient):
        env.backend.create(spec2)
    half = env.sim.vm(201)
    assert half["status"] == "stopped" and half["tags"] == [] and half["pool"] == "blockhost"
    ref2 = env.backend.create(spec2)
    done = env.sim.vm(201)
    assert done["status"] == "running" and "sub-43" in done["tags"]
    assert ref2.smbios_uuid == half["smbios_uuid"]  # the same instance, adopted
    assert len(clone_tasks(env.sim)) == 2


def test_clone_response_lost_in_transit_is_recovered(env: Env) -> None:
    env.sim.inject(op="clone", mode="drop_connection")
    ref = env.backend.create(make_spec(vmid=205, sub=45))
    assert env.sim.vm(205)["status"] == "running"
    assert ref.smbios_uuid == env.sim.vm(205)["smbios_uuid"]
    assert len(clone_tasks(env.sim)) == 1
    # a request that never reached PVE: safe to retry, nothing was created
    env.sim.inject(op="clone", mode="http_error", status=596, message="Connection timed out")
    with pytest.raises(Transient):
        env.backend.create(make_spec(vmid=206, sub=46))
    assert env.sim.vm(206) is None


def test_vmid_taken_by_a_foreign_vm_is_never_touched(env: Env) -> None:
    env.sim.create_vm(vmid=200, name="someone-else", status="running")
    before = env.sim.vm(200)
    with pytest.raises(AlreadyExists):
        env.backend.create(make_spec(vmid=200))
    assert env.sim.vm(200) == before | {"uptime": env.sim.vm(200)["uptime"]}

    # in our pool, but another subscription's marker
    env.sim.create_vm(vmid=210, name="blockhost-7", pool="blockhost", tags="blockhost;sub-7",
                      description=marker_for(7, "blockhost-7"))
    before = env.sim.vm(210)
    with pytest.raises(AlreadyExists) as info:
        env.backend.create(make_spec(vmid=210, sub=42))
    assert "sub=7" in str(info.value)
    assert env.sim.vm(210) == before
    assert all(t["id"] != "210" for t in env.sim.state()["tasks"])


# ----------------------------------------------------------------------------- power


def test_stop_and_start(env: Env) -> None:
    ref = env.backend.create(make_spec())
    env.backend.stop(ref, timeout=5)
    assert env.sim.vm(200)["status"] == "stopped"
    env.backend.stop(ref)  # already stopped: success
    env.backend.start(ref)
    assert env.sim.vm(200)["status"] == "running"
    env.backend.start(ref)  # already running: success
    # a guest that ignores ACPI is forced off after the timeout
    env.sim.update_vm(200, guest_acpi=False)
    env.backend.stop(ref, timeout=0)
    assert env.sim.vm(200)["status"] == "stopped"
    with pytest.raises(OwnershipMismatch):
        env.backend.start(replace(ref, subscription_id=99))
    assert env.sim.vm(200)["status"] == "stopped"


# ----------------------------------------------------------------------------- destroy


def test_destroy_then_destroy_again(env: Env) -> None:
    ref = env.backend.create(make_spec())
    snippet = env.snippets / "snippets" / "blockhost-42-user.yaml"
    assert snippet.exists()
    env.backend.destroy(ref)
    assert env.sim.vm(200) is None
    assert not snippet.exists()
    assert env.backend.status(ref) is None
    destroys = [t for t in env.sim.state()["tasks"] if t["type"] == "qmdestroy"]
    assert len(destroys) == 1 and destroys[0]["exitstatus"] == "OK"
    env.backend.destroy(ref)  # missing VM = success
    with pytest.raises(NotFound):
        env.backend.stop(ref)


def test_destroy_refuses_when_any_marker_differs(env: Env) -> None:
    ref = env.backend.create(make_spec())
    for bad in (replace(ref, subscription_id=999), replace(ref, name="blockhost-999"),
                replace(ref, smbios_uuid="00000000-0000-4000-8000-000000000000")):
        with pytest.raises(OwnershipMismatch):
            env.backend.destroy(bad)
        with pytest.raises(OwnershipMismatch):
            env.backend.stop(bad)
    assert env.sim.vm(200)["status"] == "running"

    # pool marker: moved out of the pool behind our back (root still sees it)
    if env.kind == "root":
        env.sim.update_vm(200, pool="")
        with pytest.raises(OwnershipMismatch):
            env.backend.destroy(ref)
        env.sim.update_vm(200, pool="blockhost")
    # tag marker removed out of band
    env.sim.update_vm(200, config={"tags": "plan-basic;sub-42"})
    with pytest.raises(OwnershipMismatch):
        env.backend.destroy(ref)
    assert env.sim.vm(200) is not None


def test_vmid_reuse_is_detected_by_the_smbios_uuid(env: Env) -> None:
    ref = env.backend.create(make_spec())
    env.backend.destroy(ref)
    # someone creates a new VM with the same id, name, pool, tags AND marker
    env.sim.create_vm(vmid=200, name="blockhost-42", pool="blockhost",
                      tags="blockhost;sub-42", description=marker_for(42, "blockhost-42"),
                      status="running")
    with pytest.raises(OwnershipMismatch) as info:
        env.backend.destroy(ref)
    assert "smbios" in str(info.value)
    assert env.sim.vm(200)["status"] == "running"


# ----------------------------------------------------------------------------- errors


def test_failed_clone_task_raises_task_failed(pvesim: PveSim) -> None:
    backend = make_backend(pvesim, None)
    pvesim.inject(op="clone", mode="fail_task",
                  message="lvcreate 'pve/vm-300-disk-0' error: insufficient free space")
    with pytest.raises(TaskFailed) as info:
        backend.create(make_spec(vmid=300, user_data=None))
    assert info.value.upid and ":qmclone:9001:" in info.value.upid
    assert "clone failed: lvcreate" in info.value.message
    assert pvesim.vm(300) is None  # PVE cleaned up
    # the default fault is a lock timeout inside the worker: Locked (retryable)
    pvesim.inject(op="clone", mode="fail_task")
    with pytest.raises(Locked):
        backend.create(make_spec(vmid=300, user_data=None))
    # and a retry then succeeds
    assert backend.create(make_spec(vmid=300, user_data=None)).vmid == 300


def test_server_errors_and_timeouts_are_transient(pvesim: PveSim) -> None:
    backend = make_backend(pvesim, None, timeout=1, task_timeout=1.5)
    pvesim.inject(op="cluster_resources", mode="http_error", status=500, message="internal")
    with pytest.raises(Transient) as info:
        backend.create(make_spec(vmid=310, user_data=None))
    assert info.value.status == 500
    pvesim.inject(op="cluster_resources", mode="http_error", status=596,
                  message="Connection timed out")
    with pytest.raises(Transient):
        backend.list_managed()
    pvesim.inject(op="cluster_resources", mode="drop_connection")
    with pytest.raises(Transient):
        backend.free_memory_by_node()
    pvesim.inject(op="cluster_resources", mode="hang", seconds=3)
    with pytest.raises(Transient):
        backend.list_managed()
    # a task that does not finish in time
    pvesim.inject(op="start", mode="hang")
    with pytest.raises(Transient) as info:
        backend.create(make_spec(vmid=311, user_data=None))
    assert info.value.upid and ":qmstart:311:" in info.value.upid
    backend_ok = make_backend(pvesim, None)
    for task in pvesim.state()["tasks"]:
        if task["type"] == "qmstart" and task["status"] == "running":
            pvesim.finish_task(task["upid"])
    ref = backend_ok.create(make_spec(vmid=311, user_data=None))
    assert backend_ok.status(ref).power == "running"


def test_locked_vm_is_reported_as_locked(pvesim: PveSim) -> None:
    backend = make_backend(pvesim, None)
    ref = backend.create(make_spec(vmid=320, user_data=None))
    pvesim.update_vm(320, lock="backup")
    with pytest.raises(Locked):
        backend.destroy(ref)
    with pytest.raises(Locked):
        backend.create(make_spec(vmid=320, user_data=None))
    pvesim.update_vm(320, lock=None)
    backend.destroy(ref)


def test_bad_token_is_permission_denied_and_the_secret_never_leaks(pvesim: PveSim) -> None:
    secret = "s3cr3t-" + "x" * 20
    backend = ProxmoxAPIBackend(pvesim.url, pvesim.token_id, secret, verify=str(pvesim.ca_path),
                                pool="blockhost", snippets_dir=None)
    with capture_logs() as logs, pytest.raises(PermissionDenied) as info:
        backend.list_managed()
    assert info.value.status == 401
    assert secret not in str(info.value) and secret not in repr(backend)
    assert secret not in repr(logs)
    real = make_backend(pvesim, None)
    with capture_logs() as logs:
        real.create(make_spec(vmid=330, user_data=None))
    assert pvesim.token_secret not in repr(logs) and pvesim.token_secret not in repr(real)


def test_user_data_without_snippets_dir_falls_back_to_ciuser(pvesim: PveSim) -> None:
    backend = make_backend(pvesim, None)
    with capture_logs() as logs:
        backend.create(make_spec(vmid=340))
    conf = pvesim.vm(340)["config"]
    assert conf["ciuser"] == "alice" and "cicustom" not in conf
    assert any(e["event"] == "pve.snippet.skipped" and e["log_level"] == "warning" for e in logs)


def test_status_list_managed_and_free_memory(env: Env) -> None:
    a = env.backend.create(make_spec(vmid=200, sub=42))
    b = env.backend.create(make_spec(vmid=201, sub=43, node="pve1", user_data=None))
    env.sim.create_vm(vmid=220, name="foreign", tags="blockhost", status="running")
    managed = env.backend.list_managed()
    # the tag alone is not ownership: a VM without our marker is never listed
    assert {s.vmid for s in managed} == {200, 201}
    by_id = {s.vmid: s for s in managed}
    assert by_id[200].node == "pve2" and by_id[201].node == "pve1"
    assert parse_marker(by_id[201].description).subscription_id == 43
    assert by_id[200].smbios_uuid == a.smbios_uuid
    assert env.backend.status(VMRef(vmid=999, node="pve1", name="x", subscription_id=1)) is None

    free = env.backend.free_memory_by_node()
    assert set(free) == {"pve1", "pve2"} and all(v > 0 for v in free.values())
    env.backend.stop(b)
    freed = env.backend.free_memory_by_node()
    assert freed["pve1"] - free["pve1"] == 3072 * 1024 * 1024
    env.sim.set_node("pve2", status="offline")
    assert set(env.backend.free_memory_by_node()) == {"pve1"}
    assert env.backend.online_nodes() == ["pve1"]


# ----------------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    ("status", "message", "expected"),
    [
        (500, "VM is locked (clone)", Locked),
        (0, "clone failed: can't lock file '/var/lock/qemu-server/lock-120.conf' - got timeout",
         Locked),
        (500, "unable to create VM 120: config file already exists", AlreadyExists),
        (400, "Parameter verification failed. VM 120 already exists", AlreadyExists),
        (500, "Configuration file 'nodes/pve1/qemu-server/120.conf' does not exist", NotFound),
        (500, "unable to find configuration file for VM 120 on node 'pve1'", NotFound),
        (403, "Permission check failed (/vms/120, VM.Allocate)", PermissionDenied),
        (401, "No ticket", PermissionDenied),
        (500, "got an unexpected error", Transient),
        (595, "Connection refused", Transient),
        (596, "Connection timed out", Transient),
        (503, "service unavailable", Transient),
        (0, "VM 120 already running", TaskFailed),
        (0, "shrinking disks is not supported", TaskFailed),
        (0, "clone failed: storage 'x' is full", TaskFailed),
        (400, "Parameter verification failed.", PveError),
        (501, "Method 'GET /x' not implemented", PveError),
    ],
)
def test_classify(status: int, message: str, expected: type[PveError]) -> None:
    assert classify(status, message) is expected


def test_error_types() -> None:
    err = Locked(500, "VM is locked (clone)\n", upid="UPID:x")
    assert str(err) == "500 VM is locked (clone)" and err.retryable and err.upid == "UPID:x"
    assert not AlreadyExists(500, "x").retryable and Transient(0, "y").retryable
    assert str(OwnershipMismatch(0, "not ours")) == "not ours"
    assert issubclass(OwnershipMismatch, PveError)


@given(sub=st.integers(min_value=0, max_value=2**64),
       name=st.from_regex(r"[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?", fullmatch=True),
       extra=st.text(max_size=50))
def test_marker_roundtrip(sub: int, name: str, extra: str) -> None:
    marker = marker_for(sub, name)
    parsed = parse_marker(marker + "\n" + extra)
    assert parsed is not None
    assert (parsed.managed_by, parsed.subscription_id, parsed.name) == ("blockhost", sub, name)


def test_manual_marker_roundtrip_and_ownership() -> None:
    """A `vm create` VM serves no subscription: ``sub=manual`` and the ``manual`` tag, and the
    two kinds of VM never pass for each other."""
    marker = marker_for(None, "box-1")
    assert marker == "managed-by=blockhost;sub=manual;name=box-1"
    parsed = parse_marker(marker)
    assert parsed is not None and parsed.subscription_id is None

    @dataclass
    class View:
        pool: str | None = "blockhost"
        name: str = "box-1"
        description: str = marker
        tags: tuple[str, ...] = ("blockhost", "manual")
        smbios_uuid: str | None = None

    common = {"pool": "blockhost", "tag": "blockhost", "deployment": None, "smbios_uuid": None,
              "require_tags": True}
    assert ownership_problems(View(), subscription_id=None, name="box-1", **common) == []
    assert ownership_problems(View(), subscription_id=0, name="box-1", **common)
    as_sub = View(description=marker_for(5, "box-1"), tags=("blockhost", "sub-5"))
    assert ownership_problems(as_sub, subscription_id=5, name="box-1", **common) == []
    assert ownership_problems(as_sub, subscription_id=None, name="box-1", **common)
    both = View(tags=("blockhost", "manual", "sub-5"))
    assert any("other subscription tags" in p for p in
               ownership_problems(both, subscription_id=None, name="box-1", **common))
    mixed = replace(as_sub, tags=("blockhost", "sub-5", "manual"))
    assert ownership_problems(mixed, subscription_id=5, name="box-1", **common)


@pytest.mark.parametrize("description", [
    None, "", "hello", "managed-by=blockhost;sub=1", "managed-by=blockhost;sub=x;name=a",
    "managed-by=blockhost;sub=Manual;name=a", "managed-by=blockhost;sub=;name=a",
    "managed-by=blockhost;sub=1;name=a;extra=1", "managed-by=blockhost;sub=1;name=a_b",
    " x\nmanaged-by=blockhost;sub=1;name=a", "managed-by=blockhost;sub=1;sub=2;name=a",
])
def test_parse_marker_rejects_malformed(description: str | None) -> None:
    assert parse_marker(description) is None


def test_marker_for_validates() -> None:
    with pytest.raises(ValueError):
        marker_for(1, "bad;name")
    with pytest.raises(ValueError):
        marker_for(-1, "ok")
    with pytest.raises(ValueError):
        marker_for(1, "ok", managed_by="x;y")


def test_build_ipconfig_and_sshkeys() -> None:
    assert build_ipconfig("10.0.0.5/24", "10.0.0.1", None, None) == "ip=10.0.0.5/24,gw=10.0.0.1"
    assert build_ipconfig(None, None, "2001:db8::5/64", None) == "ip6=2001:db8::5/64"
    assert build_ipconfig(None, None, None, None) is None
    for bad in (("10.0.0.5", None, None, None), ("10.0.0.5/24,gw=1.1.1.1", None, None, None),
                ("10.0.0.5/24", "2001:db8::1", None, None), (None, "10.0.0.1", None, None),
                (None, None, "10.0.0.5/24", None)):
        with pytest.raises(ValueError):
            build_ipconfig(*bad)
    keys = "ssh-ed25519 AAAA+/= a@b\nssh-rsa BBBB c@d"
    encoded = encode_sshkeys(keys)
    assert re.fullmatch(r"[-%a-zA-Z0-9_.!~*'()]*", encoded)
    assert "+" not in encoded and "%20" in encoded and "%0A" in encoded


def test_sshkeys_encoding_is_accepted_by_the_simulator(pvesim: PveSim) -> None:
    backend = make_backend(pvesim, None)
    ref = backend.create(make_spec(vmid=350, user_data=None))
    keys = "ssh-ed25519 AAAA+/= a@b\nssh-rsa BBBB c@d"
    backend._req("PUT", f"nodes/{ref.node}/qemu/{ref.vmid}/config", sshkeys=encode_sshkeys(keys))
    from urllib.parse import unquote
    assert unquote(pvesim.vm(350)["config"]["sshkeys"]) == keys


def test_spec_validation(pvesim: PveSim) -> None:
    backend = make_backend(pvesim, None)
    for bad in (make_spec(name="bad_name"), make_spec(pool="other"), make_spec(cores=0),
                make_spec(tags=("bad tag",)), make_spec(ipv4_cidr="10.0.0.1"),
                make_spec(username="a,b"), make_spec(vmid=5)):
        with pytest.raises(ValueError):
            backend.create(bad)
    assert [v["vmid"] for v in pvesim.state()["vms"]] == [9001]
    with pytest.raises(ValueError):
        ProxmoxAPIBackend("http://x", "root@pam!t", "s", pool="p")
    with pytest.raises(ValueError):
        ProxmoxAPIBackend("https://x", "root@pam", "s", pool="p")


def test_provisioner_never_imports_listener() -> None:
    root = REPO_ROOT / "provisioner"
    offenders = [str(p) for p in root.rglob("*.py")
                 if re.search(r"^\s*(from|import)\s+listener\b", p.read_text(), re.M)]
    assert offenders == []


@pytest.mark.parametrize(("name", "tag"), [("blockhost-1\n", "blockhost"),
                                           ("blockhost-1", "blockhost\n")])
def test_markers_refuse_a_trailing_newline(name: str, tag: str) -> None:
    """`$` would let a newline through into the description marker; `\\Z` does not."""
    from provisioner.backend import marker_for

    with pytest.raises(ValueError):
        marker_for(1, name, managed_by=tag)
