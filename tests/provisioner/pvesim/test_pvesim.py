"""The PVE API simulator, exercised over HTTPS with unchanged proxmoxer and plain requests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from proxmoxer import ProxmoxAPI, ResourceException
from proxmoxer.tools import Tasks

from provisioner.pvesim import params as simparams
from provisioner.pvesim.launcher import PveSim, PveSimError, start_pvesim
from provisioner.pvesim.server.routes import ROUTES
from tests.support.paths import REPO_ROOT, SHARED_DIR
from tests.support.pve import start_sim

SCHEMA_REL = Path("pve-api") / "schema-subset.json"
#: where the real PVE schema subset may live: $BLOCKHOST_PVE_SCHEMA, ../shared beside the repo
#: (the project layout), or shared/ inside it
SCHEMA_CANDIDATES = [
    *([Path(os.environ["BLOCKHOST_PVE_SCHEMA"])] if os.environ.get("BLOCKHOST_PVE_SCHEMA")
      else []),
    SHARED_DIR / SCHEMA_REL,
    REPO_ROOT / "shared" / SCHEMA_REL,
]


def prox(sim: PveSim, secret: str | None = None) -> ProxmoxAPI:
    user, token_name = sim.token_id.split("!")
    return ProxmoxAPI(sim.host, port=sim.port, user=user, token_name=token_name,
                      token_value=secret or sim.token_secret, verify_ssl=str(sim.ca_path),
                      service="PVE", timeout=10)


def raw(sim: PveSim, method: str, path: str, *, auth: str | None = "ok",
        **kwargs: Any) -> requests.Response:
    headers = {}
    if auth == "ok":
        headers["Authorization"] = f"PVEAPIToken={sim.token_id}={sim.token_secret}"
    elif auth is not None:
        headers["Authorization"] = auth
    return requests.request(method, f"{sim.url}/api2/json/{path.lstrip('/')}", headers=headers,
                            verify=str(sim.ca_path), timeout=10, **kwargs)


def wait(px: ProxmoxAPI, upid: str, timeout: float = 10) -> dict[str, Any]:
    status = Tasks.blocking_status(px, upid, timeout=timeout, polling_interval=0.02)
    assert status is not None, f"task {upid} did not finish"
    return status


def clone(px: ProxmoxAPI, newid: int, **extra: Any) -> str:
    params = {"newid": newid, "name": f"vm{newid}", "full": 1, **extra}
    return px.nodes("pve1").qemu(9001).clone.post(**params)


def sim_vm(sim: PveSim, vmid: int) -> dict[str, Any] | None:
    return sim.vm(vmid)


# ----------------------------------------------------------------------------- auth / envelope


def test_auth_missing_or_wrong_token_is_401(pvesim: PveSim) -> None:
    r = raw(pvesim, "GET", "version", auth=None)
    assert r.status_code == 401
    r = raw(pvesim, "GET", "version", auth=f"PVEAPIToken={pvesim.token_id}=wrong-secret")
    assert r.status_code == 401
    assert r.json()["data"] is None
    r = raw(pvesim, "GET", "version", auth="PVEAPIToken=garbage")
    assert r.status_code == 401
    with pytest.raises(ResourceException) as info:
        prox(pvesim, secret="not-the-secret").version.get()
    assert info.value.status_code == 401
    assert "not-the-secret" not in str(info.value)
    ok = raw(pvesim, "GET", "version")
    assert ok.status_code == 200 and set(ok.json()["data"]) >= {"version", "release", "repoid"}


def test_unknown_endpoint_is_501(pvesim: PveSim) -> None:
    r = raw(pvesim, "GET", "nodes/pve1/lxc")
    assert r.status_code == 501
    assert r.reason == "Method 'GET /api2/json/nodes/pve1/lxc' not implemented"


def test_tls_is_verified_with_the_generated_ca(pvesim: PveSim) -> None:
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{pvesim.url}/api2/json/version", timeout=5)  # system CAs: untrusted
    assert pvesim.ca_path.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    r = requests.get(f"{pvesim.url.replace('127.0.0.1', 'localhost')}/_sim/state",
                     verify=str(pvesim.ca_path), timeout=5)
    assert r.status_code == 200


# ----------------------------------------------------------------------------- clone + UPID


def test_clone_upid_lock_and_result(pvesim: PveSim) -> None:
    px = prox(pvesim)
    template = px.nodes("pve1").qemu(9001).config.get()
    pvesim.inject(op="clone", mode="hang")  # keep the task running until finish_task below
    upid = clone(px, 120, description="hello", pool="blockhost")

    assert upid.startswith("UPID:pve1:") and upid.endswith(":")
    assert len(upid.split(":")) == 9
    decoded = Tasks.decode_upid(upid)
    assert decoded["node"] == "pve1"
    assert decoded["type"] == "qmclone"
    assert decoded["id"] == "9001"  # the SOURCE vmid, not newid
    assert decoded["user"] == "root@pam"
    assert upid.split(":")[7] == pvesim.token_id
    for idx in (2, 3, 4):
        assert len(upid.split(":")[idx]) == 8 and \
            upid.split(":")[idx] == upid.split(":")[idx].upper()

    # while the task runs: a temporary config holding only the lock
    running = px.nodes("pve1").tasks(upid).status.get()
    assert running["status"] == "running" and "exitstatus" not in running
    conf = px.nodes("pve1").qemu(120).config.get()
    assert conf["lock"] == "clone"
    assert "name" not in conf
    listed = {e["vmid"]: e for e in px.cluster.resources.get(type="vm")}
    assert listed[120]["lock"] == "clone"
    with pytest.raises(ResourceException) as info:
        px.nodes("pve1").qemu(120).config.put(cores=2)
    assert info.value.status_code == 500
    assert info.value.content == "VM is locked (clone)"
    assert px.nodes("pve1").qemu(120).status.current.get()["lock"] == "clone"
    assert px.nodes("pve1").tasks(upid).status.get()["status"] == "running"

    pvesim.finish_task(upid)
    final = wait(px, upid)
    assert final["exitstatus"] == "OK"
    assert final["user"] == "root@pam" and final["tokenid"] == "blockhost"
    assert {"upid", "node", "pid", "pstart", "starttime", "type", "id"} <= set(final)

    conf = px.nodes("pve1").qemu(120).config.get()
    assert "lock" not in conf and "template" not in conf
    assert conf["name"] == "vm120" and conf["description"] == "hello"
    assert conf["smbios1"].startswith("uuid=") and conf["smbios1"] != template["smbios1"]
    assert conf["net0"].split(",")[0] != template["net0"].split(",")[0]  # new MAC
    assert conf["net0"].split(",")[0].startswith("virtio=BC:24:11:")
    assert conf["scsi0"].startswith("local-lvm:vm-120-disk-0")
    assert conf["cores"] == template["cores"] and len(conf["digest"]) == 40
    pool = px.pools("blockhost").get()
    assert [m["vmid"] for m in pool["members"]] == [120]
    log = px.nodes("pve1").tasks(upid).log.get()
    assert log[-1]["t"] == "TASK OK" and [e["n"] for e in log] == list(range(1, len(log) + 1))

    # two clones never share an smbios uuid
    wait(px, clone(px, 121))
    assert px.nodes("pve1").qemu(121).config.get()["smbios1"] != conf["smbios1"]


def test_clone_to_target_node_lives_there(pvesim: PveSim) -> None:
    px = prox(pvesim)
    pvesim.inject(op="clone", mode="hang")
    upid = clone(px, 130, target="pve2")
    # during the clone the temporary config sits on the source node
    assert px.nodes("pve1").qemu(130).config.get()["lock"] == "clone"
    pvesim.finish_task(upid)
    wait(px, upid)
    assert px.nodes("pve2").qemu(130).config.get()["name"] == "vm130"
    with pytest.raises(ResourceException) as info:
        px.nodes("pve1").qemu(130).config.get()
    assert info.value.content == \
        "Configuration file 'nodes/pve1/qemu-server/130.conf' does not exist"
    assert [v["vmid"] for v in px.nodes("pve2").qemu.get()] == [130]


def test_clone_synchronous_errors_in_reason_phrase(pvesim: PveSim) -> None:
    r = raw(pvesim, "POST", "nodes/pve1/qemu/9001/clone", data={"newid": 9001})
    assert r.status_code == 500
    assert r.reason == "unable to create VM 9001: config file already exists"
    assert r.json() == {"data": None,
                        "message": "unable to create VM 9001: config file already exists\n"}
    r = raw(pvesim, "POST", "nodes/pve1/qemu/555/clone", data={"newid": 556})
    assert r.status_code == 500
    assert r.reason == "Configuration file 'nodes/pve1/qemu-server/555.conf' does not exist"
    r = raw(pvesim, "POST", "nodes/pve1/qemu/9001/clone", data={"newid": 557, "pool": "nope"})
    assert r.status_code == 500 and r.reason == "pool 'nope' does not exist"
    r = raw(pvesim, "POST", "nodes/pve1/qemu/9001/clone", data={"newid": 557, "target": "pve9"})
    assert r.status_code == 500 and r.reason == "no such cluster node 'pve9'"
    r = raw(pvesim, "GET", "nodes/pve7/qemu")
    assert r.status_code == 500 and r.reason.startswith("hostname lookup 'pve7' failed")
    # a locked source refuses synchronously
    pvesim.update_vm(9001, lock="backup")
    r = raw(pvesim, "POST", "nodes/pve1/qemu/9001/clone", data={"newid": 558})
    assert r.status_code == 500 and r.reason == "VM is locked (backup)"


def test_nextid_does_not_reserve(pvesim: PveSim) -> None:
    px = prox(pvesim)
    first = px.cluster.nextid.get()
    assert str(first) == str(px.cluster.nextid.get()) == "100"
    assert int(px.cluster.nextid.get(vmid=4242)) == 4242
    assert int(px.cluster.nextid.get(vmid=4242)) == 4242
    with pytest.raises(ResourceException) as info:
        px.cluster.nextid.get(vmid=9001)
    assert info.value.status_code == 400
    assert info.value.errors == {"vmid": "VM 9001 already exists"}
    assert info.value.content == "Parameter verification failed."
    wait(px, clone(px, 100))
    assert str(px.cluster.nextid.get()) == "101"


# ----------------------------------------------------------------------------- parameters


def test_parameter_errors_are_400_with_errors_dict(pvesim: PveSim) -> None:
    px = prox(pvesim)
    wait(px, clone(px, 140))
    cfg = px.nodes("pve1").qemu(140).config
    with pytest.raises(ResourceException) as info:
        cfg.put(foo=1, cores="many", sshkeys="ssh-ed25519 AAAA me@host", tags="ok;bad tag!",
                description="x" * 8193, name="not_a_dns_name", ipconfig0="ip=10.0.0.5,gw=1.2.3.4",
                memory="8")
    errors = info.value.errors
    assert info.value.status_code == 400
    assert errors["foo"] == ("property is not defined in schema and the schema does not allow "
                             "additional properties")
    assert errors["cores"] == "type check ('integer') failed - got 'many'"
    assert set(errors) == {"foo", "cores", "sshkeys", "tags", "description", "name", "ipconfig0",
                           "memory"}
    assert "8192" in errors["description"]

    with pytest.raises(ResourceException) as info:
        px.nodes("pve1").qemu(9001).clone.post(name="x")
    assert info.value.errors == {"newid": "property is missing and it is not optional"}
    with pytest.raises(ResourceException) as info:
        px.nodes("pve1").qemu(140).resize.put(disk="scsi0", size="-5G")
    assert info.value.errors == {"size": "value does not match the regex pattern"}
    with pytest.raises(ResourceException) as info:
        px.cluster.resources.get(type="vms")
    assert "enumeration" in info.value.errors["type"]
    with pytest.raises(ResourceException) as info:
        px.nodes("pve1").qemu(140).delete(purge=1, destroy_unreferenced_disks=1)
    assert info.value.errors == {"destroy_unreferenced_disks": simparams.UNKNOWN_PROPERTY}

    # valid values are stored the way PVE stores them
    from urllib.parse import quote
    keys = "ssh-ed25519 AAAAC3Nza me@host\nssh-rsa AAAAB3 other"
    assert cfg.put(tags="zeta;alpha;zeta;Beta", sshkeys=quote(keys, safe=""), cores=4,
                   memory=4096, ipconfig0="ip=10.0.0.5/24,gw=10.0.0.1,ip6=2001:db8::5/64",
                   net0="virtio,bridge=vmbr0", description="line1\nline2") is None
    conf = cfg.get()
    assert conf["tags"] == "Beta;alpha;zeta"
    assert conf["sshkeys"] == quote(keys, safe="")
    assert conf["cores"] == 4 and str(conf["memory"]) == "4096"
    assert conf["net0"].startswith("virtio=BC:24:11:") and conf["net0"].endswith(",bridge=vmbr0")
    assert conf["description"] == "line1\nline2"
    assert cfg.put(delete="tags,sshkeys") is None
    assert "tags" not in cfg.get() and "sshkeys" not in cfg.get()


def test_digest_is_compare_and_set(pvesim: PveSim) -> None:
    px = prox(pvesim)
    wait(px, clone(px, 141))
    cfg = px.nodes("pve1").qemu(141).config
    digest = cfg.get()["digest"]
    cfg.put(cores=3, digest=digest)
    with pytest.raises(ResourceException) as info:
        cfg.put(cores=5, digest=digest)
    assert info.value.content.startswith("detected modified configuration")
    assert cfg.get()["cores"] == 3


def test_async_config_post_returns_upid(pvesim: PveSim) -> None:
    px = prox(pvesim)
    wait(px, clone(px, 142))
    upid = px.nodes("pve1").qemu(142).config.post(cores=6)
    assert Tasks.decode_upid(upid)["type"] == "qmconfig"
    assert wait(px, upid)["exitstatus"] == "OK"
    assert px.nodes("pve1").qemu(142).config.get()["cores"] == 6


# ----------------------------------------------------------------------------- power / destroy


def test_power_and_destroy_semantics(pvesim: PveSim) -> None:
    px = prox(pvesim)
    wait(px, clone(px, 150))
    vm = px.nodes("pve1").qemu(150)
    # stop on a stopped VM is a no-op success; agent ping needs a running guest
    assert wait(px, vm.status.stop.post())["exitstatus"] == "OK"
    with pytest.raises(ResourceException) as info:
        vm.agent.ping.post()
    assert info.value.content == "QEMU guest agent is not running"
    assert wait(px, vm.status.start.post())["exitstatus"] == "OK"
    cur = vm.status.current.get()
    assert cur["status"] == "running" and cur["qmpstatus"] == "running" and cur["vmid"] == 150
    assert cur["name"] == "vm150" and "uptime" in cur
    assert vm.agent.ping.post() == {"result": {}}
    assert wait(px, vm.status.start.post())["exitstatus"] == "VM 150 already running"

    # destroy of a running VM is refused synchronously
    with pytest.raises(ResourceException) as info:
        vm.delete(purge=1, **{"destroy-unreferenced-disks": 1})
    assert info.value.status_code == 500
    assert info.value.content == "VM 150 is running - destroy failed"

    # a guest that ignores ACPI: shutdown times out unless forceStop
    pvesim.update_vm(150, guest_acpi=False)
    status = wait(px, vm.status.shutdown.post(timeout=0))
    assert status["exitstatus"] == "VM quit/powerdown failed - got timeout"
    assert vm.status.current.get()["status"] == "running"
    assert wait(px, vm.status.shutdown.post(timeout=0, forceStop=1))["exitstatus"] == "OK"
    assert vm.status.current.get()["status"] == "stopped"

    upid = vm.delete(purge=1, **{"destroy-unreferenced-disks": 1})
    assert Tasks.decode_upid(upid)["type"] == "qmdestroy"
    assert wait(px, upid)["exitstatus"] == "OK"
    with pytest.raises(ResourceException) as info:
        vm.config.get()
    assert info.value.status_code == 500
    assert info.value.content == \
        "Configuration file 'nodes/pve1/qemu-server/150.conf' does not exist"
    with pytest.raises(ResourceException) as info:
        vm.delete(purge=1)
    assert "does not exist" in info.value.content
    with pytest.raises(ResourceException) as info:
        vm.status.current.get()
    assert "does not exist" in info.value.content


def test_locked_vm_fails_start_and_destroy_inside_the_task(pvesim: PveSim) -> None:
    px = prox(pvesim)
    wait(px, clone(px, 151))
    pvesim.update_vm(151, lock="backup")
    vm = px.nodes("pve1").qemu(151)
    assert wait(px, vm.status.start.post())["exitstatus"] == "VM is locked (backup)"
    assert wait(px, vm.delete(purge=1))["exitstatus"] == "VM is locked (backup)"
    assert sim_vm(pvesim, 151) is not None
    # root may skip the lock and clear it
    vm.config.put(delete="lock", skiplock=1)
    assert "lock" not in vm.config.get()


def test_resize_checks_run_inside_the_task(pvesim: PveSim) -> None:
    px = prox(pvesim)
    wait(px, clone(px, 152))
    vm = px.nodes("pve1").qemu(152)
    assert vm.config.get()["scsi0"].endswith("size=2G")
    assert wait(px, vm.resize.put(disk="scsi0", size="1G"))["exitstatus"] == \
        "shrinking disks is not supported"
    assert wait(px, vm.resize.put(disk="scsi3", size="10G"))["exitstatus"] == \
        "disk 'scsi3' does not exist"
    upid = vm.resize.put(disk="scsi0", size="+3G")
    assert Tasks.decode_upid(upid)["type"] == "resize"
    assert wait(px, upid)["exitstatus"] == "OK"
    assert vm.config.get()["scsi0"].endswith("size=5G")
    assert wait(px, vm.resize.put(disk="scsi0", size="20G"))["exitstatus"] == "OK"
    assert vm.config.get()["scsi0"].endswith("size=20G")


def test_listing_endpoints(pvesim: PveSim) -> None:
    px = prox(pvesim)
    wait(px, clone(px, 160, pool="blockhost"))
    px.nodes("pve1").qemu(160).config.put(tags="blockhost;sub-1")
    wait(px, px.nodes("pve1").qemu(160).status.start.post())
    nodes = {n["node"]: n for n in px.nodes.get()}
    assert set(nodes) == {"pve1", "pve2"} and nodes["pve1"]["status"] == "online"
    res = px.cluster.resources.get(type="vm")
    entry = next(e for e in res if e["vmid"] == 160)
    assert entry["id"] == "qemu/160" and entry["type"] == "qemu" and entry["node"] == "pve1"
    assert entry["tags"] == "blockhost;sub-1" and entry["pool"] == "blockhost"
    assert entry["status"] == "running" and entry["template"] == 0
    assert entry["maxmem"] == 2048 * 1024 * 1024 and entry["maxcpu"] == 2 and "mem" in entry
    assert "description" not in entry
    assert next(e for e in res if e["vmid"] == 9001)["template"] == 1
    node_entries = px.cluster.resources.get(type="node")
    assert {e["type"] for e in node_entries} == {"node"}
    pve1 = next(e for e in node_entries if e["node"] == "pve1")
    pve2 = next(e for e in node_entries if e["node"] == "pve2")
    assert pve1["maxmem"] - pve1["mem"] < pve2["maxmem"] - pve2["mem"]  # a running VM on pve1
    assert {p["poolid"] for p in px.pools.get()} == {"blockhost"}
    assert [m["vmid"] for m in px.pools.get(poolid="blockhost")[0]["members"]] == [160]
    assert {v["vmid"] for v in px.nodes("pve1").qemu.get()} == {160, 9001}


# ----------------------------------------------------------------------------- privileges


def test_pool_scoped_token_only_touches_its_pool(tmp_path: Path) -> None:
    sim = start_sim(tmp_path, clone_seconds=0.05)
    try:
        px = prox(sim)
        sim.create_vm(vmid=700, name="foreign", status="running")
        # foreign VMs are invisible and untouchable
        assert {e["vmid"] for e in px.cluster.resources.get(type="vm")} == {9001}
        with pytest.raises(ResourceException) as info:
            px.nodes("pve1").qemu(700).config.get()
        assert info.value.status_code == 403
        assert info.value.content == "Permission check failed (/vms/700, VM.Audit)"
        with pytest.raises(ResourceException) as info:
            px.nodes("pve1").qemu(700).delete(purge=1)
        assert info.value.content == "Permission check failed (/vms/700, VM.Allocate)"
        # cloning needs the pool (VM.Allocate on /pool/blockhost)
        with pytest.raises(ResourceException) as info:
            clone(px, 701)
        assert info.value.content == "Permission check failed (/vms/701, VM.Allocate)"
        # a clone into the pool works; the VM joins the pool when the clone finishes
        upid = clone(px, 701, pool="blockhost")
        wait(px, upid)
        assert px.nodes("pve1").qemu(701).config.get()["name"] == "vm701"
        # the template can be read and cloned but not modified
        with pytest.raises(ResourceException) as info:
            px.nodes("pve1").qemu(9001).config.put(cores=8)
        assert info.value.status_code == 403
        # a clone onto a foreign VMID still reports the existing config file
        with pytest.raises(ResourceException) as info:
            clone(px, 700, pool="blockhost")
        assert info.value.content == "unable to create VM 700: config file already exists"
        # skiplock is root-only
        with pytest.raises(ResourceException) as info:
            px.nodes("pve1").qemu(701).config.put(cores=2, skiplock=1)
        assert info.value.errors == {"skiplock": "Only root may use this option."}
        # nextid still sees every VMID
        with pytest.raises(ResourceException):
            px.cluster.nextid.get(vmid=700)
        assert sim.vm(700)["status"] == "running"
    finally:
        sim.stop()


# ----------------------------------------------------------------------------- persistence


def test_state_survives_sigkill_and_in_flight_clone_leaves_a_stuck_lock(pvesim: PveSim) -> None:
    px = prox(pvesim)
    wait(px, clone(px, 170, pool="blockhost"))
    wait(px, px.nodes("pve1").qemu(170).status.start.post())
    pvesim.inject(op="clone", mode="hang")
    stuck = clone(px, 171, pool="blockhost")
    time.sleep(0.1)
    before = pvesim.state()
    ca_before = pvesim.ca_path.read_bytes()
    pvesim.kill()

    sim2 = start_pvesim(pvesim.workdir, state_file=pvesim.state_file, token=pvesim.token,
                        clone_seconds=0.2)
    try:
        px2 = prox(sim2)
        assert sim2.ca_path.read_bytes() == ca_before  # same CA across restarts
        after = sim2.state()
        vm170 = next(v for v in after["vms"] if v["vmid"] == 170)
        old170 = next(v for v in before["vms"] if v["vmid"] == 170)
        assert vm170["status"] == "running" and vm170["config"] == old170["config"]
        assert px2.nodes("pve1").qemu(171).config.get()["lock"] == "clone"
        status = px2.nodes("pve1").tasks(stuck).status.get()
        assert status["status"] == "stopped" and status["exitstatus"] == "unexpected status"
        with pytest.raises(ResourceException) as info:
            px2.nodes("pve1").qemu(171).config.put(cores=2)
        assert info.value.content == "VM is locked (clone)"
        with pytest.raises(ResourceException):
            clone(px2, 171)
        # faults persist too (the consumed hang fault is gone)
        assert after["faults"] == []
    finally:
        sim2.stop()


# ----------------------------------------------------------------------------- faults


def test_fault_injection_modes(pvesim: PveSim) -> None:
    px = prox(pvesim)
    # http error before any side effect, once
    pvesim.inject(op="clone", mode="http_error", status=596, message="Connection timed out")
    with pytest.raises(ResourceException) as info:
        clone(px, 180)
    assert info.value.status_code == 596
    assert sim_vm(pvesim, 180) is None
    wait(px, clone(px, 180))

    # a failed clone task cleans up its VM
    pvesim.inject(op="clone", mode="fail_task")
    upid = clone(px, 181)
    status = wait(px, upid)
    assert status["exitstatus"] == \
        "clone failed: can't lock file '/var/lock/qemu-server/lock-181.conf' - got timeout"
    assert sim_vm(pvesim, 181) is None
    pvesim.inject(op="clone", mode="fail_task", message="storage 'local-lvm' is full")
    assert wait(px, clone(px, 181))["exitstatus"] == "clone failed: storage 'local-lvm' is full"

    # dropped connection after the side effect: the client never sees the UPID
    pvesim.inject(op="clone", mode="drop_connection")
    with pytest.raises(requests.exceptions.ConnectionError):
        clone(px, 182)
    assert sim_vm(pvesim, 182)["lock"] == "clone"

    # a hung task never stops until released through the control API
    pvesim.inject(op="start", mode="hang", vmid=180)
    upid = px.nodes("pve1").qemu(180).status.start.post()
    time.sleep(0.15)
    assert px.nodes("pve1").tasks(upid).status.get()["status"] == "running"
    assert pvesim.finish_task(upid)["exitstatus"] == "OK"
    assert px.nodes("pve1").qemu(180).status.current.get()["status"] == "running"

    # skip / count / filters
    pvesim.inject(op="config_get", mode="http_error", skip=1, count=2, vmid=180)
    px.nodes("pve1").qemu(9001).config.get()  # other vmid: not matched
    px.nodes("pve1").qemu(180).config.get()  # skipped
    for _ in range(2):
        with pytest.raises(ResourceException):
            px.nodes("pve1").qemu(180).config.get()
    px.nodes("pve1").qemu(180).config.get()
    assert pvesim.state()["faults"] == []

    # latency
    pvesim.inject(op="version", mode="latency", seconds=0.3)
    t0 = time.monotonic()
    px.version.get()
    assert time.monotonic() - t0 >= 0.3

    # bad fault specs are rejected
    with pytest.raises(PveSimError):
        pvesim.inject(op="version", mode="fail_task")
    with pytest.raises(PveSimError):
        pvesim.inject(op="nope", mode="http_error")


def test_control_api_vms_nodes_reset(pvesim: PveSim) -> None:
    vm = pvesim.create_vm(vmid=190, name="foreign", tags="x;y", description="not ours",
                          node="pve2", status="running")
    assert vm["node"] == "pve2" and vm["tags"] == ["x", "y"] and vm["status"] == "running"
    px = prox(pvesim)
    assert px.nodes("pve2").qemu(190).config.get()["description"] == "not ours"
    pvesim.set_node("pve2", status="offline")
    with pytest.raises(ResourceException) as info:
        px.nodes("pve2").qemu(190).config.get()
    assert info.value.status_code == 595
    statuses = {e["node"]: e["status"] for e in px.cluster.resources.get(type="node")}
    assert statuses["pve2"] == "offline"
    pvesim.set_node("pve2", status="online")
    pvesim.delete_vm(190)
    assert pvesim.vm(190) is None
    pvesim.inject(op="version", mode="http_error")
    pvesim.reset()
    state = pvesim.state()
    assert [v["vmid"] for v in state["vms"]] == [9001] and state["faults"] == []
    assert state["template_vmid"] == 9001 and state["pool"] == "blockhost"
    saved = json.loads(pvesim.state_file.read_text())
    assert list(saved["vms"]) == ["9001"]


def test_cli_generates_and_prints_a_token(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    env = {k: v for k, v in os.environ.items() if k != "BLOCKHOST_PVESIM_TOKEN"}
    env["PYTHONPATH"] = str(REPO_ROOT)
    with open(out, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "provisioner.pvesim", "--workdir",
                                 str(tmp_path / "w"), "--quiet"], stdout=fh,
                                stderr=subprocess.DEVNULL, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 15
        while "CA certificate:" not in out.read_text() and time.monotonic() < deadline:
            time.sleep(0.02)
        lines = out.read_text().splitlines()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert lines[0].startswith("API token: root@pam!blockhost=")
    assert lines[1].startswith("Listening on https://127.0.0.1:")
    assert lines[2] == f"CA certificate: {tmp_path / 'w' / 'pvesim-ca.pem'}"
    assert proc.returncode == 0


# ----------------------------------------------------------------------------- schema


def _schema_required() -> bool:
    """In CI (``CI=true``) a missing schema is a failure: a skip there would hide a check that
    could then never fail. ``BLOCKHOST_REQUIRE_PVE_SCHEMA=1`` asks the same anywhere."""
    return os.environ.get("CI", "").lower() == "true" or \
        os.environ.get("BLOCKHOST_REQUIRE_PVE_SCHEMA") == "1"


def _schema() -> dict[str, Any]:
    """The real schema subset; skip (fail in CI) with the paths looked at when absent, and
    fail when present but unreadable."""
    path = next((p for p in SCHEMA_CANDIDATES if p.is_file()), None)
    if path is None:
        looked = ", ".join(str(p) for p in SCHEMA_CANDIDATES)
        message = (f"PVE schema subset not found (looked at {looked}); cannot cross-check the "
                   "simulator's parameter table - set BLOCKHOST_PVE_SCHEMA to its path")
        if _schema_required():
            pytest.fail(f"{message}. CI must run this check: put shared/ (with {SCHEMA_REL}) "
                        "beside the clone")
        pytest.skip(message)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        pytest.fail(f"PVE schema subset {path} is unreadable: {exc}")
    if not isinstance(data, dict) or not data:
        pytest.fail(f"PVE schema subset {path} is not a non-empty JSON object")
    return data


def test_schema_lookup_finds_the_shared_file_or_explains() -> None:
    assert REPO_ROOT.parent / "shared" / SCHEMA_REL in SCHEMA_CANDIDATES
    if not any(p.is_file() for p in SCHEMA_CANDIDATES):
        with pytest.raises(pytest.skip.Exception, match="looked at"):
            _schema()
    else:
        assert "/nodes/{node}/qemu/{vmid}/clone" in _schema()


def test_a_missing_schema_fails_in_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    monkeypatch.setitem(globals(), "SCHEMA_CANDIDATES", [tmp_path / "absent.json"])
    monkeypatch.delenv("BLOCKHOST_REQUIRE_PVE_SCHEMA", raising=False)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run this check"):
        _schema()
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="looked at"):
        _schema()


def test_simulator_parameters_exist_in_the_real_schema() -> None:
    schema = _schema()
    problems = []
    for (method, path), table in simparams.ENDPOINTS.items():
        real = schema.get(path, {}).get(method)
        if real is None:
            problems.append(f"{method} {path}: not in the real schema")
            continue
        props = real.get("parameters", {}).get("properties", {})
        assert not real.get("parameters", {}).get("additionalProperties", 0)
        for name, spec in table.items():
            rp = props.get(name)
            if rp is None:
                problems.append(f"{method} {path}: '{name}' is not a real parameter")
                continue
            if rp.get("type") != spec.type:
                problems.append(f"{method} {path}: '{name}' type {spec.type} != {rp.get('type')}")
            if bool(rp.get("optional", 0)) != spec.optional:
                problems.append(f"{method} {path}: '{name}' optional {spec.optional}")
            if spec.enum is not None and not set(spec.enum) <= set(rp.get("enum", [])):
                problems.append(f"{method} {path}: '{name}' enum not a subset")
            if spec.max_length is not None and rp.get("maxLength") != spec.max_length:
                problems.append(f"{method} {path}: '{name}' maxLength differs")
            for bound in ("minimum", "maximum"):
                mine = getattr(spec, bound)
                if mine is not None and rp.get(bound) is not None and float(rp[bound]) != mine:
                    problems.append(f"{method} {path}: '{name}' {bound} {mine} != {rp[bound]}")
        # every required real parameter is required by the simulator too
        for name, rp in props.items():
            if not rp.get("optional") and name not in table:
                problems.append(f"{method} {path}: required '{name}' missing from the simulator")
    assert not problems, "\n".join(problems)
    assert {(r.method, r.template) for r in ROUTES} == set(simparams.ENDPOINTS)


def test_simulator_permissions_match_the_real_schema() -> None:
    from provisioner.pvesim.server.routes import VM_PRIVS

    schema = _schema()
    for route in ROUTES:
        if route.op not in VM_PRIVS:
            continue
        check = schema[route.template][route.method]["permissions"].get("check")
        assert check and check[0] == "perm" and check[1] == "/vms/{vmid}", route
        assert VM_PRIVS[route.op] in check[2], (route, check)


# ----------------------------------------------------------------------------- create / template


def test_create_and_template_endpoints(pvesim: PveSim) -> None:
    px = prox(pvesim)
    node = px.nodes("pve2")
    with pytest.raises(ResourceException) as info:
        node.qemu.post(vmid=9001, name="dup", scsi0="local-lvm:1")
    assert info.value.status_code == 500
    assert "unable to create VM 9001: config file already exists" in info.value.content
    with pytest.raises(ResourceException) as info:
        node.qemu.post(vmid=700, bogus=1)
    assert info.value.status_code == 400 and set(info.value.errors) == {"bogus"}

    upid = node.qemu.post(vmid=700, name="tpl", scsi0="local-lvm:4", ide2="local-lvm:cloudinit",
                          net0="virtio,bridge=vmbr0", serial0="socket", tags="b;a;a")
    assert Tasks.decode_upid(upid)["type"] == "qmcreate"
    assert Tasks.decode_upid(upid)["id"] == "700"
    assert node.qemu(700).config.get()["lock"] == "create"  # while the worker runs
    assert Tasks.blocking_status(px, upid, timeout=10, polling_interval=0.02)["exitstatus"] == "OK"
    conf = node.qemu(700).config.get()
    assert conf["scsi0"] == "local-lvm:vm-700-disk-0,size=4G" and "lock" not in conf
    assert conf["ide2"] == "local-lvm:vm-700-cloudinit,media=cdrom"
    assert conf["tags"] == "a;b" and conf["smbios1"].startswith("uuid=")
    assert conf["net0"].startswith("virtio=") and conf["net0"].endswith(",bridge=vmbr0")

    Tasks.blocking_status(px, node.qemu(700).status.start.post(), timeout=10,
                          polling_interval=0.02)
    with pytest.raises(ResourceException) as info:
        node.qemu(700).template.post()
    assert "you can't convert a VM to template if VM is running" in info.value.content
    Tasks.blocking_status(px, node.qemu(700).status.stop.post(), timeout=10, polling_interval=0.02)
    upid = node.qemu(700).template.post()
    assert Tasks.blocking_status(px, upid, timeout=10, polling_interval=0.02)["exitstatus"] == "OK"
    assert node.qemu(700).config.get()["scsi0"].startswith("local-lvm:base-700-disk-0,")
    with pytest.raises(ResourceException) as info:
        node.qemu(700).template.post()
    assert "you can't convert a template to a template" in info.value.content


def test_slow_task_fault_keeps_a_task_running_until_finished(pvesim: PveSim) -> None:
    px = prox(pvesim)
    pvesim.inject(op="start", mode="slow_task", seconds=600, count=1)
    upid = clone(px, 710, pool="blockhost")
    Tasks.blocking_status(px, upid, timeout=10, polling_interval=0.02)
    start = px.nodes("pve1").qemu(710).status.start.post()
    assert px.nodes("pve1").tasks(start).status.get()["status"] == "running"
    assert pvesim.finish_task(start)["exitstatus"] == "OK"
    assert px.nodes("pve1").qemu(710).status.current.get()["status"] == "running"
    with pytest.raises(Exception, match="needs a task op"):
        pvesim.inject(op="config_get", mode="slow_task")
