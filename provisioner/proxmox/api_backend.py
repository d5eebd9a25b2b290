"""VMBackend over the Proxmox VE HTTP API (proxmoxer, API-token auth, verified TLS).

Every asynchronous call returns a UPID that is polled to completion; PVE's error strings are
mapped to the typed errors of :mod:`provisioner.errors`. VMIDs always come from the caller
(never from ``/cluster/nextid``, which reserves nothing).

How a VM is found: ``GET /cluster/resources?type=vm`` lists exactly the VMs the token may
audit (with a pool-scoped token: the pool's members and the template), so a VM missing there
is either gone or not ours; its node is taken from that listing, not from the caller.

The token secret is handed to proxmoxer (which sends it in the Authorization header) and is
never logged or put into an exception message.
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import requests
import structlog
from proxmoxer import ProxmoxAPI, ResourceException
from proxmoxer.tools import Tasks

from provisioner.storage.atomic_file import write_atomic
from provisioner.backend import (
    NAME_RE,
    TAG_RE,
    VMRef,
    VMSpec,
    VMStatus,
    marker_for,
    ownership_problems,
    parse_marker,
    subscription_tag,
)
from provisioner.proxmox.clone_journal import CloneJournal, MemoryCloneJournal, new_entry
from provisioner.errors import (
    AlreadyExists,
    Locked,
    NotFound,
    OwnershipMismatch,
    PveError,
    TaskFailed,
    Transient,
    VmidTaken,
    classify,
)

log = structlog.get_logger(__name__)

GIB = 1024**3
_TOKEN_ID_RE = re.compile(r"^(?P<user>[^@!=\s]+@[^@!=\s]+)!(?P<name>[A-Za-z][A-Za-z0-9._\-]*)$")
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)([KMGT]?)$")
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_DISK_KEYS = tuple([f"scsi{i}" for i in range(31)] + [f"virtio{i}" for i in range(16)]
                   + [f"sata{i}" for i in range(6)] + [f"ide{i}" for i in range(4)])
_NIC_MODELS = ("virtio", "e1000", "e1000e", "rtl8139", "vmxnet3", "i82551", "i82557b",
               "i82559er", "ne2k_isa", "ne2k_pci", "pcnet", "e1000-82540em", "e1000-82544gc",
               "e1000-82545em")
_MAC_RE = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")


def encode_sshkeys(keys: str) -> str:
    """PVE's ``sshkeys`` must be strictly percent-encoded (``quote_plus`` is wrong)."""
    return quote(keys, safe="")


def build_ipconfig(ipv4_cidr: str | None, gateway4: str | None, ipv6_cidr: str | None,
                   gateway6: str | None) -> str | None:
    """``ip=...,gw=...,ip6=...,gw6=...`` for ipconfig0 from validated addresses; None if no
    address is given. Raises ValueError on malformed or mismatched input."""
    parts = [*_ip_parts(4, ipv4_cidr, gateway4, "ip", "gw"),
             *_ip_parts(6, ipv6_cidr, gateway6, "ip6", "gw6")]
    return ",".join(parts) or None


def _ip_parts(version: int, cidr: str | None, gateway: str | None, ip_key: str,
              gw_key: str) -> list[str]:
    """One address family's ``ip`` / ``gw`` parts of ipconfig0."""
    if not cidr:
        if gateway:
            raise ValueError(f"gateway{version} given without ipv{version}_cidr")
        return []
    iface = ipaddress.ip_interface(cidr)
    if iface.version != version or "/" not in cidr:
        raise ValueError(f"not an IPv{version} CIDR: {cidr!r}")
    parts = [f"{ip_key}={iface.with_prefixlen}"]
    if gateway:
        gw = ipaddress.ip_address(gateway)
        if gw.version != version:
            raise ValueError(f"not an IPv{version} gateway: {gateway!r}")
        parts.append(f"{gw_key}={gw}")
    return parts


def _parse_size(text: str) -> int | None:
    m = _SIZE_RE.match(text.strip())
    if not m:
        return None
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def _disk_size(value: str) -> int | None:
    for opt in str(value).split(",")[1:]:
        if opt.startswith("size="):
            return _parse_size(opt[5:])
    return None


def _net0_value(existing: str | None, bridge: str) -> str:
    """``virtio=<kept MAC>,bridge=<bridge>[,other kept options]``."""
    mac = None
    keep: list[str] = []
    for i, part in enumerate((existing or "").split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if key in _NIC_MODELS:
            if sep and _MAC_RE.match(value):
                mac = value
        elif key == "macaddr" and _MAC_RE.match(value):
            mac = value
        elif key in ("firewall", "mtu", "queues", "rate", "tag", "trunks", "link_down"):
            keep.append(part)
        elif i == 0 and not sep:
            continue
    head = f"virtio={mac}" if mac else "virtio"
    return ",".join([head, f"bridge={bridge}", *keep])


@dataclass
class _VM:
    """What one inspection saw: the /cluster/resources entry plus the config."""

    vmid: int
    node: str
    entry: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.config.get("name") or self.entry.get("name") or "")

    @property
    def tags(self) -> tuple[str, ...]:
        raw = str(self.config.get("tags") or self.entry.get("tags") or "")
        return tuple(t for t in re.split(r"[;,\s]+", raw) if t)

    @property
    def pool(self) -> str | None:
        return self.entry.get("pool") or None

    @property
    def lock(self) -> str | None:
        return self.config.get("lock") or self.entry.get("lock") or None

    @property
    def description(self) -> str:
        return str(self.config.get("description") or "")

    @property
    def smbios_uuid(self) -> str | None:
        for part in str(self.config.get("smbios1") or "").split(","):
            if part.startswith("uuid="):
                return part[5:]
        return None

    @property
    def digest(self) -> str | None:
        return self.config.get("digest")


class ProxmoxAPIBackend:
    """:class:`provisioner.backend.VMBackend` over the PVE API via proxmoxer."""

    def __init__(
        self,
        api_url: str,
        token_id: str,
        token_secret: str,
        *,
        verify: bool | str = True,
        pool: str,
        tag: str = "blockhost",
        snippets_dir: Path | None = None,
        snippets_storage: str = "local",
        task_timeout: float = 600,
        poll_interval: float = 0.2,
        timeout: float = 30,
        journal_dir: Path | None = None,
    ) -> None:
        """``journal_dir`` (recommended in production, e.g. ``<state dir>/clones``) keeps the
        clones in flight across a crash, so a restart waits for and adopts its own half-made
        VM instead of mistaking it for a foreign one."""
        split = urlsplit(api_url if "://" in api_url else f"https://{api_url}")
        if split.scheme != "https" or not split.hostname:
            raise ValueError(f"Proxmox API URL must be https://HOST[:PORT]: {api_url!r}")
        m = _TOKEN_ID_RE.match(token_id or "")
        if not m:
            raise ValueError("Proxmox token id must look like USER@REALM!TOKENID")
        if not token_secret:
            raise ValueError("Proxmox token secret is empty")
        if not TAG_RE.match(tag):
            raise ValueError(f"tag is not a valid PVE tag: {tag!r}")
        self.api_url = api_url
        self.host = split.hostname
        self.port = split.port or 8006
        self.token_id = token_id
        self._user = m.group("user")
        self._token_name = m.group("name")
        self._token_secret = token_secret
        self.verify = verify
        self.pool = pool
        self.tag = tag
        self.snippets_dir = Path(snippets_dir) if snippets_dir is not None else None
        self.snippets_storage = snippets_storage
        self.task_timeout = task_timeout
        self.poll_interval = poll_interval
        self.timeout = timeout
        self._local = threading.local()
        self._template_nodes: dict[int, str] = {}
        self._journal: CloneJournal | MemoryCloneJournal = (
            CloneJournal(Path(journal_dir)) if journal_dir is not None else MemoryCloneJournal())

    def __repr__(self) -> str:
        return (f"ProxmoxAPIBackend({self.api_url!r}, token_id={self.token_id!r}, "
                f"pool={self.pool!r}, tag={self.tag!r})")

    # ------------------------------------------------------------------ transport

    def _api(self) -> ProxmoxAPI:
        api = getattr(self._local, "api", None)
        if api is None:
            api = ProxmoxAPI(self.host, port=self.port, user=self._user,
                             token_name=self._token_name, token_value=self._token_secret,
                             verify_ssl=self.verify, service="PVE", timeout=self.timeout)
            self._local.api = api
        return api

    def _scrub(self, text: str) -> str:
        return text.replace(self._token_secret, "***") if self._token_secret else text

    def _map_exception(self, exc: Exception, what: str) -> PveError:
        if isinstance(exc, ResourceException):
            message = self._scrub(str(exc.content or exc.status_message or "").strip())
            errors = None
            if isinstance(exc.errors, dict):
                errors = {str(k): self._scrub(str(v)) for k, v in exc.errors.items()}
            text = " ".join([message, *(errors or {}).values()])
            cls = classify(int(exc.status_code), text)
            return cls(int(exc.status_code), message, errors=errors)
        if isinstance(exc, requests.exceptions.SSLError):
            return PveError(0, f"{what}: TLS verification failed talking to "
                               f"{self.host}:{self.port} (check the CA / verify_ssl setting)")
        if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
            return Transient(0, f"{what}: {type(exc).__name__} talking to "
                                f"{self.host}:{self.port}")
        if isinstance(exc, requests.exceptions.RequestException):
            return Transient(0, f"{what}: {type(exc).__name__}: {self._scrub(str(exc))}")
        return PveError(0, f"{what}: {type(exc).__name__}: {self._scrub(str(exc))}")

    def _req(self, method: str, path: str, **params: Any) -> Any:
        """One API call; ``path`` is relative to /api2/json (e.g. ``nodes/pve1/qemu``)."""
        resource = self._api()(path)
        what = f"{method} /{path}"
        try:
            if method == "GET":
                return resource.get(**params)
            if method == "POST":
                return resource.post(**params)
            if method == "PUT":
                return resource.put(**params)
            if method == "DELETE":
                return resource.delete(**params)
        except (ResourceException, requests.exceptions.RequestException) as exc:
            raise self._map_exception(exc, what) from None
        raise ValueError(f"unsupported method {method}")

    def request(self, method: str, path: str, **params: Any) -> Any:
        """One typed-error API call for sibling modules (e.g. template_build); ``path`` is
        relative to /api2/json."""
        return self._req(method, path, **params)

    # ------------------------------------------------------------------ tasks

    def wait_task(self, upid: str, *, timeout: float | None = None) -> dict[str, Any]:
        """Poll ``/nodes/{node}/tasks/{upid}/status`` until the task stops.

        Returns the final status on ``OK`` / ``WARNINGS: n``; raises the classified error
        (Locked / AlreadyExists / NotFound / TaskFailed) otherwise, and Transient when the task
        is still running after ``timeout`` (default ``task_timeout``). Transient errors while
        polling are retried until the deadline."""
        if not isinstance(upid, str):
            raise PveError(0, f"expected a UPID, got {type(upid).__name__}")
        try:
            node = Tasks.decode_upid(upid)["node"]
        except (AssertionError, IndexError, ValueError):
            raise PveError(0, f"malformed UPID {upid!r}") from None
        limit = self.task_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        delay = min(0.05, self.poll_interval)
        while True:
            try:
                status = self._req("GET", f"nodes/{node}/tasks/{upid}/status")
            except Transient as exc:
                if time.monotonic() >= deadline:
                    raise Transient(0, f"task {upid}: status unavailable: {exc.message}",
                                    upid=upid) from None
                log.warning("pve.task.poll_failed", upid=upid, error=exc.message)
                status = None
            if status is not None and status.get("status") == "stopped":
                exitstatus = str(status.get("exitstatus") or "")
                if exitstatus == "OK" or exitstatus.startswith("WARNINGS"):
                    log.debug("pve.task.ok", upid=upid, exitstatus=exitstatus)
                    return status
                cls = classify(0, exitstatus)
                if cls in (Transient, PveError):
                    cls = TaskFailed
                log.info("pve.task.failed", upid=upid, exitstatus=exitstatus)
                raise cls(0, exitstatus or "task failed without exit status", upid=upid)
            if time.monotonic() >= deadline:
                raise Transient(0, f"task {upid} still running after {limit:g}s", upid=upid)
            time.sleep(delay)
            delay = min(self.poll_interval, delay * 2)

    # ------------------------------------------------------------------ lookups

    def _resources(self, rtype: str) -> list[dict[str, Any]]:
        data = self._req("GET", "cluster/resources", type=rtype)
        return [e for e in data or [] if isinstance(e, dict)]

    def _entry(self, vmid: int) -> dict[str, Any] | None:
        for entry in self._resources("vm"):
            if entry.get("type") == "qemu" and int(entry.get("vmid", -1)) == vmid:
                return entry
        return None

    def _inspect(self, vmid: int) -> _VM | None:
        """The VM as far as this token can see it, or None (absent or invisible)."""
        entry = self._entry(vmid)
        if entry is None:
            return None
        node = str(entry["node"])
        try:
            config = self._req("GET", f"nodes/{node}/qemu/{vmid}/config")
        except NotFound:
            return None
        return _VM(vmid=vmid, node=node, entry=entry, config=dict(config or {}))

    def _power(self, vm: _VM) -> str:
        data = self._req("GET", f"nodes/{vm.node}/qemu/{vm.vmid}/status/current")
        return str(data.get("status") or "unknown")

    def _template_node(self, template_vmid: int) -> str:
        cached = self._template_nodes.get(template_vmid)
        if cached:
            return cached
        entry = self._entry(template_vmid)
        if entry is None:
            raise NotFound(0, f"template VM {template_vmid} not found (or not visible to "
                              f"token {self.token_id})")
        node = str(entry["node"])
        self._template_nodes[template_vmid] = node
        return node

    def free_memory_by_node(self) -> dict[str, int]:
        """Free memory in bytes per ONLINE node (from /cluster/resources)."""
        out: dict[str, int] = {}
        for entry in self._resources("node"):
            if entry.get("type") != "node" or entry.get("status") != "online":
                continue
            out[str(entry["node"])] = max(0, int(entry.get("maxmem", 0)) - int(entry.get("mem", 0)))
        return out

    def node_resources(self) -> list[dict[str, Any]]:
        """The ``/cluster/resources?type=node`` entries, as
        :func:`provisioner.placement.choose_node` takes them."""
        return [e for e in self._resources("node") if e.get("type") == "node"]

    def online_nodes(self) -> list[str]:
        return sorted(self.free_memory_by_node())

    # ------------------------------------------------------------------ ownership

    def _marker_problems(self, vm: _VM, *, subscription_id: int | None, name: str,
                         smbios_uuid: str | None, require_tags: bool) -> list[str]:
        return ownership_problems(
            vm, pool=self.pool, tag=self.tag, subscription_id=subscription_id, name=name,
            smbios_uuid=smbios_uuid, require_tags=require_tags,
            is_template=bool(vm.entry.get("template") or vm.config.get("template")))

    def _verify_owned(self, vm: _VM, ref: VMRef, action: str) -> None:
        if ref.smbios_uuid is None:
            log.warning("pve.ownership.no_recorded_uuid", vmid=vm.vmid, action=action,
                        detail="smbios uuid never recorded; checked pool, tags and marker only")
        # tags are not a clone parameter: a clone whose configure step never ran (crash) has
        # none yet; pool + marker (written in the clone call) still prove it is ours
        half_made = not [t for t in vm.tags if t != f"{self.tag}-deleting"]
        if half_made:
            log.info("pve.ownership.untagged_clone", vmid=vm.vmid, action=action)
        problems = self._marker_problems(vm, subscription_id=ref.subscription_id, name=ref.name,
                                         smbios_uuid=ref.smbios_uuid, require_tags=not half_made)
        if problems:
            log.warning("pve.ownership.mismatch", vmid=vm.vmid, action=action, problems=problems)
            raise OwnershipMismatch(0, f"refusing to {action} VM {vm.vmid}: not ours ("
                                       + "; ".join(problems) + ")")

    def _check_adoptable(self, vm: _VM, spec: VMSpec) -> None:
        if vm.lock == "clone" and parse_marker(vm.description) is None:
            pending = self._journal.get(vm.vmid)
            ours = pending is not None and pending.subscription_id == spec.subscription_id
            if not ours and isinstance(self._journal, CloneJournal):
                # the journal is written before every clone POST: no entry = not our clone
                raise VmidTaken(0, f"VMID {vm.vmid} is being cloned by someone else "
                                   "(lock: clone, no clone of ours recorded)")
            raise Locked(0, f"VM {vm.vmid} is being cloned (lock: clone); retry later")
        problems = self._marker_problems(vm, subscription_id=spec.subscription_id,
                                         name=spec.name, smbios_uuid=None, require_tags=False)
        if problems:
            log.warning("pve.create.vmid_taken", vmid=vm.vmid, problems=problems)
            raise VmidTaken(0, f"VMID {vm.vmid} is taken by a VM that is not ours ("
                                   + "; ".join(problems) + ")")
        if vm.lock:
            raise Locked(0, f"VM {vm.vmid} is locked ({vm.lock})")

    # ------------------------------------------------------------------ create

    def _validate_spec(self, spec: VMSpec) -> None:
        if not NAME_RE.match(spec.name):
            raise ValueError(f"VM name is not a valid DNS name: {spec.name!r}")
        if not 100 <= spec.vmid <= 999_999_999:
            raise ValueError(f"VMID out of range: {spec.vmid}")
        if spec.pool != self.pool:
            raise ValueError(f"spec pool {spec.pool!r} differs from the backend pool {self.pool!r}")
        if spec.cores < 1 or spec.memory_mb < 16 or spec.disk_gb < 1:
            raise ValueError("cores >= 1, memory_mb >= 16 and disk_gb >= 1 are required")
        for tag in spec.tags:
            if not TAG_RE.match(tag):
                raise ValueError(f"not a valid PVE tag: {tag!r}")
        if not re.fullmatch(r"[-_.\w]+", spec.bridge):
            raise ValueError(f"not a valid bridge name: {spec.bridge!r}")
        if not spec.username or any(c in spec.username for c in ",=\n\r"):
            raise ValueError(f"invalid username: {spec.username!r}")
        build_ipconfig(spec.ipv4_cidr, spec.gateway4, spec.ipv6_cidr, spec.gateway6)

    def create(self, spec: VMSpec) -> VMRef:
        self._validate_spec(spec)
        blog = log.bind(vmid=spec.vmid, name=spec.name, sub=spec.subscription_id)
        vm = self._inspect(spec.vmid)
        if vm is None:
            vm = self._clone_or_resume(spec)
        else:
            self._check_adoptable(vm, spec)
            blog.info("pve.create.adopt", node=vm.node)
        self._journal.remove(spec.vmid)
        if spec.user_data is not None:
            self._write_snippet(spec.name, spec.user_data)
        self._configure(vm, spec)
        vm = self._inspect(spec.vmid) or vm
        self._resize(vm, spec)
        self._ensure_running(vm)
        blog.info("pve.create.done", node=vm.node, smbios_uuid=vm.smbios_uuid)
        return VMRef(vmid=spec.vmid, node=vm.node, name=spec.name,
                     subscription_id=spec.subscription_id, smbios_uuid=vm.smbios_uuid)

    def vmid_is_free(self, vmid: int) -> bool:
        """Public form of the cluster-wide check, for the allocator: skip ids this says are
        taken (a check at this moment, never a reservation)."""
        return self._id_is_free(vmid)

    def _id_is_free(self, vmid: int) -> bool:
        """``GET /cluster/nextid?vmid=N``: whether N is unused cluster-wide right now (a check,
        never a reservation)."""
        try:
            self._req("GET", "cluster/nextid", vmid=vmid)
        except AlreadyExists:
            return False
        return True

    def _task_state(self, upid: str) -> tuple[str, str]:
        """(``running`` | ``stopped``, exitstatus) of a task; NotFound when PVE forgot it."""
        node = Tasks.decode_upid(upid)["node"]
        status = self._req("GET", f"nodes/{node}/tasks/{upid}/status")
        return str(status.get("status") or ""), str(status.get("exitstatus") or "")

    def _clone_or_resume(self, spec: VMSpec) -> _VM:
        """The VMID is not visible to us: resume a clone we started earlier (maybe before a
        crash), or start one. Raises Locked while our own clone still runs and VmidTaken when
        the id is held by something we did not create."""
        pending = self._journal.get(spec.vmid)
        blog = log.bind(vmid=spec.vmid, sub=spec.subscription_id)
        if pending is not None and pending.subscription_id != spec.subscription_id:
            blog.info("pve.clone.stale_journal", other_sub=pending.subscription_id)
            self._journal.remove(spec.vmid)
            pending = None
        if pending is not None:
            if pending.upid is not None:
                try:
                    state, exitstatus = self._task_state(pending.upid)
                except NotFound:
                    state, exitstatus = "stopped", "task vanished"
                if state == "running":
                    raise Locked(0, f"our clone into VM {spec.vmid} is still running "
                                    f"({pending.upid}); retry later", upid=pending.upid)
                if exitstatus == "OK" or exitstatus.startswith("WARNINGS"):
                    vm = self._inspect(spec.vmid)
                    if vm is None:
                        raise Transient(0, f"clone of VM {spec.vmid} finished but the VM is "
                                           "not visible yet")
                    self._check_adoptable(vm, spec)
                    blog.info("pve.clone.resumed", upid=pending.upid)
                    return vm
                # a failed clone task frees its volumes and config: start over
                blog.info("pve.clone.previous_failed", upid=pending.upid, exitstatus=exitstatus)
                self._journal.remove(spec.vmid)
            elif not self._id_is_free(spec.vmid):
                # the POST went out but its answer was lost (crash, dropped connection)
                if time.time() - pending.started_at < self.task_timeout:
                    raise Locked(0, f"VM {spec.vmid} exists but is not visible yet; our clone "
                                    "is probably still running; retry later")
                self._journal.remove(spec.vmid)
                raise VmidTaken(0, f"VMID {spec.vmid} is held by a VM this token cannot see "
                                   f"(no clone of ours finished within {self.task_timeout:g}s)")
            else:
                self._journal.remove(spec.vmid)
        return self._clone(spec)

    def _clone(self, spec: VMSpec) -> _VM:
        tnode = self._template_node(spec.template_vmid)
        params: dict[str, Any] = {
            "newid": spec.vmid,
            "name": spec.name,
            "description": marker_for(spec.subscription_id, spec.name, managed_by=self.tag),
            "pool": spec.pool,
            "full": 1 if spec.full_clone else 0,
        }
        if spec.node != tnode:
            params["target"] = spec.node
        if spec.storage and spec.full_clone:
            params["storage"] = spec.storage
        blog = log.bind(vmid=spec.vmid, template=spec.template_vmid, node=tnode,
                        target=spec.node)
        intent = new_entry(spec.vmid, spec.subscription_id, spec.name, spec.template_vmid)
        self._journal.record(intent)
        try:
            upid = self._req("POST", f"nodes/{tnode}/qemu/{spec.template_vmid}/clone", **params)
        except AlreadyExists:
            self._journal.remove(spec.vmid)
            vm = self._inspect(spec.vmid)
            if vm is None:
                blog.warning("pve.create.vmid_taken", problems=["not visible to this token"])
                raise VmidTaken(0, f"VMID {spec.vmid} already exists and is not visible to "
                                   "this token (not ours)") from None
            self._check_adoptable(vm, spec)
            blog.info("pve.clone.adopt_existing")
            return vm
        except Transient as exc:
            blog.warning("pve.clone.outcome_unknown", error=exc.message)
            return self._recover_clone(spec, exc)
        except PveError:
            self._journal.remove(spec.vmid)
            raise
        self._journal.record(replace(intent, upid=str(upid)))
        blog.info("pve.clone.started", upid=upid)
        try:
            self.wait_task(upid)
        except (TaskFailed, Locked, AlreadyExists, NotFound):
            self._journal.remove(spec.vmid)  # PVE cleaned up after the failed worker
            raise
        vm = self._inspect(spec.vmid)
        if vm is None:
            raise Transient(0, f"clone of VM {spec.vmid} finished but the VM is not visible yet")
        self._check_adoptable(vm, spec)
        blog.info("pve.clone.done", smbios_uuid=vm.smbios_uuid, node=vm.node)
        return vm

    def _recover_clone(self, spec: VMSpec, cause: Transient) -> _VM:
        """The clone POST failed in transit: find out whether PVE started it."""
        deadline = time.monotonic() + self.task_timeout
        while True:
            try:
                self._req("GET", "cluster/nextid", vmid=spec.vmid)
            except AlreadyExists:
                pass  # the VMID exists: our clone (probably) started
            else:
                self._journal.remove(spec.vmid)
                raise Transient(0, f"clone of VM {spec.vmid} was not started ({cause.message}); "
                                   "safe to retry") from None
            vm = self._inspect(spec.vmid)
            if vm is not None and vm.lock != "clone":
                self._check_adoptable(vm, spec)
                return vm
            if time.monotonic() >= deadline:
                raise Transient(0, f"clone of VM {spec.vmid} still running after "
                                   f"{self.task_timeout:g}s")
            time.sleep(self.poll_interval)

    def _snippet_name(self, name: str) -> str:
        return f"{name}-user.yaml"

    def _write_snippet(self, name: str, content: str) -> None:
        if self.snippets_dir is None:
            log.warning("pve.snippet.skipped", name=name,
                        reason="snippets_dir not configured: user-data not delivered, "
                               "only ciuser is set")
            return
        directory = self.snippets_dir / "snippets"
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / self._snippet_name(name)
        write_atomic(target, content.encode("utf-8"), mode=0o640)
        log.info("pve.snippet.written", path=str(target), bytes=len(content.encode("utf-8")))

    def _remove_snippet(self, name: str) -> None:
        if self.snippets_dir is None:
            return
        try:
            (self.snippets_dir / "snippets" / self._snippet_name(name)).unlink()
        except FileNotFoundError:
            pass

    def _configure(self, vm: _VM, spec: VMSpec) -> None:
        tags = sorted({self.tag, subscription_tag(spec.subscription_id), *spec.tags})
        params: dict[str, Any] = {
            "cores": spec.cores,
            "memory": spec.memory_mb,
            "net0": _net0_value(vm.config.get("net0"), spec.bridge),
            "ciuser": spec.username,
            "tags": ";".join(tags),
        }
        ipconfig = build_ipconfig(spec.ipv4_cidr, spec.gateway4, spec.ipv6_cidr, spec.gateway6)
        if ipconfig:
            params["ipconfig0"] = ipconfig
        if spec.user_data is not None and self.snippets_dir is not None:
            params["cicustom"] = (f"user={self.snippets_storage}:snippets/"
                                  f"{self._snippet_name(spec.name)}")
        if vm.digest:
            params["digest"] = vm.digest
        self._req("PUT", f"nodes/{vm.node}/qemu/{vm.vmid}/config", **params)
        log.info("pve.config.set", vmid=vm.vmid, keys=sorted(k for k in params if k != "digest"))

    def _boot_disk(self, config: dict[str, Any]) -> str | None:
        boot = str(config.get("boot") or "")
        order: list[str] = []
        if boot.startswith("order="):
            order = [d for d in boot[6:].split(";") if d]
        for key in [*order, *_DISK_KEYS]:
            value = config.get(key)
            if value and "media=cdrom" not in str(value).split(",")[1:] \
                    and _disk_size(str(value)) is not None:
                return key
        return None

    def _resize(self, vm: _VM, spec: VMSpec) -> None:
        disk = self._boot_disk(vm.config)
        if disk is None:
            log.warning("pve.resize.no_disk", vmid=vm.vmid)
            return
        current = _disk_size(str(vm.config[disk])) or 0
        wanted = spec.disk_gb * GIB
        if wanted <= current:
            return
        upid = self._req("PUT", f"nodes/{vm.node}/qemu/{vm.vmid}/resize", disk=disk,
                         size=f"{spec.disk_gb}G")
        self.wait_task(upid)
        log.info("pve.resize.done", vmid=vm.vmid, disk=disk, size_gb=spec.disk_gb)

    def _ensure_running(self, vm: _VM) -> None:
        if self._power(vm) == "running":
            return
        upid = self._req("POST", f"nodes/{vm.node}/qemu/{vm.vmid}/status/start")
        try:
            self.wait_task(upid)
        except TaskFailed as exc:
            if "already running" not in exc.message:
                raise
        log.info("pve.start.done", vmid=vm.vmid, node=vm.node)

    # ------------------------------------------------------------------ lifecycle

    def _require(self, ref: VMRef, action: str) -> _VM:
        vm = self._inspect(ref.vmid)
        if vm is None:
            raise NotFound(0, f"VM {ref.vmid} ({ref.name}) does not exist")
        self._verify_owned(vm, ref, action)
        return vm

    def start(self, ref: VMRef) -> None:
        vm = self._require(ref, "start")
        if vm.lock:
            raise Locked(0, f"VM {vm.vmid} is locked ({vm.lock})")
        self._ensure_running(vm)

    def stop(self, ref: VMRef, *, timeout: int = 60) -> None:
        vm = self._require(ref, "stop")
        if self._power(vm) == "stopped":
            return
        base = f"nodes/{vm.node}/qemu/{vm.vmid}/status"
        upid = self._req("POST", f"{base}/shutdown", timeout=int(timeout), forceStop=1)
        try:
            self.wait_task(upid, timeout=max(self.task_timeout, timeout + 30))
        except (TaskFailed, Transient) as exc:
            log.warning("pve.shutdown.failed", vmid=vm.vmid, error=exc.message)
            upid = self._req("POST", f"{base}/stop")
            self.wait_task(upid)
        if self._power(vm) != "stopped":
            raise TaskFailed(0, f"VM {vm.vmid} is still running after shutdown and stop")
        log.info("pve.stop.done", vmid=vm.vmid)

    def destroy(self, ref: VMRef) -> None:
        """Two-phase: verify every marker, mark the VM ``<tag>-deleting`` with a digest
        compare-and-set (so nothing changed since the check), stop, re-verify the same instance
        (smbios uuid), then delete with purge. Missing = success."""
        vm = self._inspect(ref.vmid)
        if vm is None:
            if self._own_clone_in_flight(ref):
                raise Locked(0, f"our clone into VM {ref.vmid} is still running; it is "
                                "destroyed once it has finished (retry later)")
            # The clone may have ended between the two reads (PVE adds the VM to the pool
            # only then): look again before calling it absent, or it would leak.
            vm = self._inspect(ref.vmid)
        if vm is None:
            self._journal.remove(ref.vmid)
            log.info("pve.destroy.absent", vmid=ref.vmid)
            self._remove_snippet(ref.name)
            return
        self._verify_owned(vm, ref, "destroy")
        if vm.lock:
            raise Locked(0, f"VM {vm.vmid} is locked ({vm.lock})")
        deleting = f"{self.tag}-deleting"
        if deleting not in vm.tags:
            params: dict[str, Any] = {"tags": ";".join(sorted({*vm.tags, deleting}))}
            if vm.digest:
                params["digest"] = vm.digest
            self._req("PUT", f"nodes/{vm.node}/qemu/{vm.vmid}/config", **params)
        if self._power(vm) != "stopped":
            upid = self._req("POST", f"nodes/{vm.node}/qemu/{vm.vmid}/status/stop")
            self.wait_task(upid)
        again = self._inspect(ref.vmid)
        if again is None:
            log.info("pve.destroy.vanished", vmid=vm.vmid)
            self._remove_snippet(ref.name)
            return
        self._verify_owned(again, replace(ref, smbios_uuid=vm.smbios_uuid), "destroy")
        try:
            upid = self._req("DELETE", f"nodes/{vm.node}/qemu/{vm.vmid}", purge=1,
                             **{"destroy-unreferenced-disks": 1})
            self.wait_task(upid)
        except NotFound:
            log.info("pve.destroy.vanished", vmid=vm.vmid)
        if self._inspect(ref.vmid) is not None:
            raise Transient(0, f"VM {ref.vmid} still exists after destroy")
        pending = self._journal.get(ref.vmid)
        if pending is not None and pending.subscription_id == ref.subscription_id:
            self._journal.remove(ref.vmid)
        self._remove_snippet(ref.name)
        log.info("pve.destroy.done", vmid=vm.vmid)

    def _own_clone_in_flight(self, ref: VMRef) -> bool:
        """Whether a clone we journalled for this subscription may still produce the VM
        (destroying "nothing" now would leak it once the clone task finishes)."""
        pending = self._journal.get(ref.vmid)
        if pending is None or pending.subscription_id != ref.subscription_id:
            return False
        if pending.upid is not None:
            try:
                state, _ = self._task_state(pending.upid)
            except NotFound:
                return False
            return state == "running"
        return not self._id_is_free(ref.vmid)

    def status(self, ref: VMRef) -> VMStatus | None:
        vm = self._inspect(ref.vmid)
        if vm is None:
            return None
        try:
            power = self._power(vm)
        except NotFound:
            return None
        return self._to_status(vm, power)

    def _to_status(self, vm: _VM, power: str) -> VMStatus:
        return VMStatus(vmid=vm.vmid, node=vm.node, name=vm.name, power=power, lock=vm.lock,
                        tags=vm.tags, pool=vm.pool, description=vm.description,
                        smbios_uuid=vm.smbios_uuid)

    def list_managed(self) -> list[VMStatus]:
        out: list[VMStatus] = []
        for entry in self._resources("vm"):
            if entry.get("type") != "qemu" or entry.get("template"):
                continue
            tags = [t for t in re.split(r"[;,\s]+", str(entry.get("tags") or "")) if t]
            if self.tag not in tags:
                continue
            vmid = int(entry["vmid"])
            node = str(entry["node"])
            try:
                config = self._req("GET", f"nodes/{node}/qemu/{vmid}/config")
            except NotFound:
                continue
            vm = _VM(vmid=vmid, node=node, entry=entry, config=dict(config or {}))
            out.append(self._to_status(vm, str(entry.get("status") or "unknown")))
        return sorted(out, key=lambda s: s.vmid)
