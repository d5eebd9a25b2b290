"""The one place that talks to the Proxmox VE HTTP API (proxmoxer, API-token auth, verified TLS).

proxmoxer ships no types, so it is wrapped here behind a narrow typed surface. Every call raises
the typed errors of :mod:`provisioner.errors` (PVE's error strings are classified); an
asynchronous call returns a UPID that :meth:`PveClient.wait_task` polls to completion.

The token secret is handed to proxmoxer (which sends it in the Authorization header) and is
never logged or put into an exception message.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Protocol, TypedDict, cast
from urllib.parse import urlsplit

import requests
import structlog
from proxmoxer import ProxmoxAPI, ResourceException
from proxmoxer.tools import Tasks

from provisioner.errors import AlreadyExists, PveError, TaskFailed, Transient, classify

log = structlog.get_logger(__name__)

_TOKEN_ID_RE = re.compile(r"^(?P<user>[^@!=\s]+@[^@!=\s]+)!(?P<name>[A-Za-z][A-Za-z0-9._\-]*)$")

#: One request parameter, as proxmoxer form-encodes it.
Param = str | int | float


class ClusterResource(TypedDict, total=False):
    """One ``GET /cluster/resources`` entry (the fields read here)."""

    type: str  # "qemu" | "node" | ...
    vmid: int
    node: str
    name: str
    tags: str
    pool: str
    lock: str
    template: int
    status: str
    maxmem: int
    mem: int


class TaskStatus(TypedDict, total=False):
    """``GET /nodes/{node}/tasks/{upid}/status`` (the fields read here)."""

    status: str  # "running" | "stopped"
    exitstatus: str  # "OK", "WARNINGS: n" or the error


class _Resource(Protocol):
    """What is used of a proxmoxer resource (``api(path)``)."""

    def get(self, **params: Param) -> object: ...
    def post(self, **params: Param) -> object: ...
    def put(self, **params: Param) -> object: ...
    def delete(self, **params: Param) -> object: ...


class _Connection(Protocol):
    """A proxmoxer ``ProxmoxAPI``: called with a path relative to /api2/json."""

    def __call__(self, path: str) -> _Resource: ...


class _ResourceFailure(Protocol):
    """What is read of proxmoxer's ``ResourceException`` (an HTTP error answer)."""

    status_code: int
    status_message: str
    content: str
    errors: object


def task_ok(exitstatus: str) -> bool:
    """Whether a stopped task succeeded (``OK`` or ``WARNINGS: n``)."""
    return exitstatus == "OK" or exitstatus.startswith("WARNINGS")


def expect_upid(value: object) -> str:
    """An asynchronous call's answer as a UPID string, else PveError."""
    if not isinstance(value, str):
        raise PveError(0, f"expected a UPID, got {type(value).__name__}")
    return value


def upid_node(upid: str) -> str:
    """The node a task runs on; AssertionError/IndexError/ValueError when malformed."""
    return str(Tasks.decode_upid(upid)["node"])


def _split_url(api_url: str) -> tuple[str, int]:
    split = urlsplit(api_url if "://" in api_url else f"https://{api_url}")
    if split.scheme != "https" or not split.hostname:
        raise ValueError(f"Proxmox API URL must be https://HOST[:PORT]: {api_url!r}")
    return split.hostname, split.port or 8006


def _split_token_id(token_id: str) -> tuple[str, str]:
    m = _TOKEN_ID_RE.match(token_id or "")
    if not m:
        raise ValueError("Proxmox token id must look like USER@REALM!TOKENID")
    return m.group("user"), m.group("name")


class PveClient:
    """Typed-error calls to one PVE cluster with one API token (one proxmoxer session per
    thread: a requests session is not thread-safe)."""

    def __init__(self, api_url: str, token_id: str, token_secret: str, *,
                 verify: bool | str = True, timeout: float = 30, task_timeout: float = 600,
                 poll_interval: float = 0.2) -> None:
        self.host, self.port = _split_url(api_url)
        self._user, self._token_name = _split_token_id(token_id)
        if not token_secret:
            raise ValueError("Proxmox token secret is empty")
        self.api_url = api_url
        self.token_id = token_id
        self._token_secret = token_secret
        self.verify = verify
        self.timeout = timeout
        self.task_timeout = task_timeout
        self.poll_interval = poll_interval
        self._local = threading.local()

    # ------------------------------------------------------------------ transport

    def _api(self) -> _Connection:
        api: _Connection | None = getattr(self._local, "api", None)
        if api is None:
            api = ProxmoxAPI(self.host, port=self.port, user=self._user,
                             token_name=self._token_name, token_value=self._token_secret,
                             verify_ssl=self.verify, service="PVE", timeout=self.timeout)
            self._local.api = api
        return api

    def _scrub(self, text: str) -> str:
        return text.replace(self._token_secret, "***") if self._token_secret else text

    def _resource_error(self, exc: _ResourceFailure) -> PveError:
        """PVE's answer classified by its status and messages (secret scrubbed)."""
        message = self._scrub(str(exc.content or exc.status_message or "").strip())
        errors = None
        if isinstance(exc.errors, dict):
            errors = {str(k): self._scrub(str(v)) for k, v in exc.errors.items()}
        text = " ".join([message, *(errors or {}).values()])
        cls = classify(int(exc.status_code), text)
        return cls(int(exc.status_code), message, errors=errors)

    def _map_exception(self, exc: Exception, what: str) -> PveError:
        if isinstance(exc, ResourceException):
            return self._resource_error(exc)
        if isinstance(exc, requests.exceptions.SSLError):
            return PveError(0, f"{what}: TLS verification failed talking to "
                               f"{self.host}:{self.port} (check the CA / verify_ssl setting)")
        if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
            return Transient(0, f"{what}: {type(exc).__name__} talking to "
                                f"{self.host}:{self.port}")
        if isinstance(exc, requests.exceptions.RequestException):
            return Transient(0, f"{what}: {type(exc).__name__}: {self._scrub(str(exc))}")
        return PveError(0, f"{what}: {type(exc).__name__}: {self._scrub(str(exc))}")

    def _req(self, method: str, path: str, **params: Param) -> object:
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

    def request(self, method: str, path: str, **params: Param) -> object:
        """One typed-error API call for sibling modules (e.g. template_build); ``path`` is
        relative to /api2/json."""
        return self._req(method, path, **params)

    # ------------------------------------------------------------------ typed answers

    def get_object(self, path: str, **params: Param) -> dict[str, object]:
        """A GET answered with one JSON object (empty when PVE answers null)."""
        return dict(cast("dict[str, object]", self._req("GET", path, **params) or {}))

    def resources(self, rtype: str) -> list[ClusterResource]:
        """``GET /cluster/resources?type=<rtype>``: what this token may audit."""
        data = cast("list[object]", self._req("GET", "cluster/resources", type=rtype) or [])
        return [cast(ClusterResource, e) for e in data if isinstance(e, dict)]

    def task(self, method: str, path: str, **params: Param) -> str:
        """An asynchronous call: its UPID (wait for it with :meth:`wait_task`)."""
        return expect_upid(self._req(method, path, **params))

    def vmid_is_free(self, vmid: int) -> bool:
        """``GET /cluster/nextid?vmid=N``: whether N is unused cluster-wide right now (a check
        at this moment, never a reservation: the allocator skips ids this says are taken)."""
        try:
            self._req("GET", "cluster/nextid", vmid=vmid)
        except AlreadyExists:
            return False
        return True

    # ------------------------------------------------------------------ tasks

    def _task_status(self, node: str, upid: str) -> TaskStatus:
        return cast(TaskStatus, self.get_object(f"nodes/{node}/tasks/{upid}/status"))

    def task_state(self, upid: str) -> tuple[str, str]:
        """(``running`` | ``stopped``, exitstatus) of a task; NotFound when PVE forgot it."""
        status = self._task_status(upid_node(upid), upid)
        return str(status.get("status") or ""), str(status.get("exitstatus") or "")

    def wait_task(self, upid: str, *, timeout: float | None = None) -> TaskStatus:
        """Poll ``/nodes/{node}/tasks/{upid}/status`` until the task stops.

        Returns the final status on ``OK`` / ``WARNINGS: n``; raises the classified error
        (Locked / AlreadyExists / NotFound / TaskFailed) otherwise, and Transient when the task
        is still running after ``timeout`` (default ``task_timeout``). Transient errors while
        polling are retried until the deadline."""
        node = _checked_node(upid)
        limit = self.task_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        delay = min(0.05, self.poll_interval)
        while True:
            status = self._poll_task(node, upid, deadline)
            if status is not None and status.get("status") == "stopped":
                return _task_outcome(upid, status)
            if time.monotonic() >= deadline:
                raise Transient(0, f"task {upid} still running after {limit:g}s", upid=upid)
            time.sleep(delay)
            delay = min(self.poll_interval, delay * 2)

    def _poll_task(self, node: str, upid: str, deadline: float) -> TaskStatus | None:
        """One status read; None after a transient failure while there is time to retry."""
        try:
            return self._task_status(node, upid)
        except Transient as exc:
            if time.monotonic() >= deadline:
                raise Transient(0, f"task {upid}: status unavailable: {exc.message}",
                                upid=upid) from None
            log.warning("pve.task.poll_failed", upid=upid, error=exc.message)
            return None


def _checked_node(upid: object) -> str:
    """The node of a UPID given by a caller, PveError when it is none."""
    text = expect_upid(upid)
    try:
        return upid_node(text)
    except (AssertionError, IndexError, ValueError):
        raise PveError(0, f"malformed UPID {text!r}") from None


def _task_outcome(upid: str, status: TaskStatus) -> TaskStatus:
    """The status of a stopped task that succeeded, else its classified error."""
    exitstatus = str(status.get("exitstatus") or "")
    if task_ok(exitstatus):
        log.debug("pve.task.ok", upid=upid, exitstatus=exitstatus)
        return status
    cls = classify(0, exitstatus)
    if cls in (Transient, PveError):
        cls = TaskFailed
    log.info("pve.task.failed", upid=upid, exitstatus=exitstatus)
    raise cls(0, exitstatus or "task failed without exit status", upid=upid)
