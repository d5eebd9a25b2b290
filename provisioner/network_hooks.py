"""Operator hooks run after a VM is created or destroyed (e.g. add/remove an IPv6 host route).

A hook is an argv list - never a shell string - whose first item is an absolute path. It gets
the VM's facts as environment variables (validated values only, so nothing chain-controlled can
smuggle in syntax), a minimal base environment and no stdin. A hook runs in its own session
under one hard timeout that covers it and everything it starts: on expiry its process group,
its descendants and any process still holding its output pipes (a grandchild that left the
group) are killed, and the step never waits on them afterwards. Of each output stream the
last :data:`OUTPUT_CAP` bytes are kept, with a note of how many came before. All hooks of an
event run, in order; afterwards :class:`HookFailed` lists the ones that failed, so the caller
can retry the step (hooks must be idempotent, as the reference's root agent's route commands
are).

Environment: ``BLOCKHOST_EVENT`` (``created`` | ``destroyed``), ``BLOCKHOST_VM_NAME``,
``BLOCKHOST_VMID``, ``BLOCKHOST_NODE``, ``BLOCKHOST_BRIDGE``, ``BLOCKHOST_IPV4``,
``BLOCKHOST_IPV6`` (addresses without prefix; empty when absent),
``BLOCKHOST_SUBSCRIPTION_ID`` (empty when absent).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import selectors
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import structlog

from provisioner.backend import NAME_RE
from provisioner.errors import ProvisionerError

log = structlog.get_logger(__name__)

EVENTS = ("created", "destroyed")
_BRIDGE_RE = re.compile(r"^[-_.\w]{1,64}$")
#: Bytes kept of each output stream: the last ones, where a failing hook says why.
OUTPUT_CAP = 64 * 1024
_READ_SIZE = 64 * 1024
#: After SIGKILL (which cannot be ignored), how long to wait for the hook to be reaped.
_REAP_WAIT = 5.0
#: variables passed through from the parent environment (nothing else leaks into hooks)
BASE_ENV_KEYS = ("PATH", "LANG", "LC_ALL", "TZ")


class HookFailed(ProvisionerError):
    """One or more network hooks exited non-zero, timed out or could not be started."""

    def __init__(self, message: str, results: Sequence[HookResult] = ()) -> None:
        super().__init__(message)
        #: every hook of the event, with what was kept of its output
        self.results = list(results)


@dataclass(frozen=True)
class VMFacts:
    """What a hook learns about the VM."""

    name: str
    vmid: int
    node: str
    bridge: str
    ipv4: str | None = None
    ipv6: str | None = None
    subscription_id: int | None = None


@dataclass(frozen=True)
class HookResult:
    argv: tuple[str, ...]
    returncode: int | None  # None: timed out or not started
    stdout: str
    stderr: str
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.error is None


def validate_hook(argv: Sequence[str]) -> tuple[str, ...]:
    """An argv list: non-empty strings, absolute program path, no NUL bytes."""
    if isinstance(argv, (str, bytes)) or not argv:
        raise ValueError("a hook is a non-empty list of arguments, not a shell string")
    items = tuple(argv)
    if not all(isinstance(a, str) for a in items):
        raise ValueError("hook arguments must be strings")
    if any("\x00" in a for a in items):
        raise ValueError("hook arguments must not contain NUL bytes")
    if not os.path.isabs(items[0]):
        raise ValueError(f"hook program must be an absolute path: {items[0]!r}")
    return items


def _address(value: str | None, version: int) -> str:
    if not value:
        return ""
    addr = ipaddress.ip_interface(value).ip  # accepts "a.b.c.d" and "a.b.c.d/nn"
    if addr.version != version:
        raise ValueError(f"not an IPv{version} address: {value!r}")
    return str(addr)


def hook_environment(event: str, facts: VMFacts,
                     base_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The hook's whole environment; raises ValueError on a fact that fails validation."""
    if event not in EVENTS:
        raise ValueError(f"unknown hook event {event!r}; one of {EVENTS}")
    if not NAME_RE.match(facts.name) or not NAME_RE.match(facts.node):
        raise ValueError(f"VM and node names must be DNS names: {facts.name!r}, {facts.node!r}")
    if not _BRIDGE_RE.match(facts.bridge):
        raise ValueError(f"not a bridge name: {facts.bridge!r}")
    if isinstance(facts.vmid, bool) or not isinstance(facts.vmid, int) or facts.vmid < 100:
        raise ValueError(f"not a VMID: {facts.vmid!r}")
    sub = facts.subscription_id
    if sub is not None and (isinstance(sub, bool) or not isinstance(sub, int) or sub < 0):
        raise ValueError(f"not a subscription id: {sub!r}")
    source = os.environ if base_env is None else base_env
    env = {k: source[k] for k in BASE_ENV_KEYS if k in source}
    env.setdefault("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    env.update({
        "BLOCKHOST_EVENT": event,
        "BLOCKHOST_VM_NAME": facts.name,
        "BLOCKHOST_VMID": str(facts.vmid),
        "BLOCKHOST_NODE": facts.node,
        "BLOCKHOST_BRIDGE": facts.bridge,
        "BLOCKHOST_IPV4": _address(facts.ipv4, 4),
        "BLOCKHOST_IPV6": _address(facts.ipv6, 6),
        "BLOCKHOST_SUBSCRIPTION_ID": "" if sub is None else str(sub),
    })
    return env


class _Tail:
    """The last :data:`OUTPUT_CAP` bytes of a stream and how many came before them."""

    def __init__(self) -> None:
        self.kept = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        self.kept += chunk
        excess = len(self.kept) - OUTPUT_CAP
        if excess > 0:
            del self.kept[:excess]
            self.dropped += excess

    def text(self) -> str:
        text = self.kept.decode(errors="replace")
        return f"[{self.dropped} earlier bytes dropped]\n{text}" if self.dropped else text


def _run_one(argv: tuple[str, ...], env: dict[str, str], timeout: float) -> HookResult:
    try:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True, cwd="/")
    except OSError as exc:
        return HookResult(argv, None, "", "", f"could not start: {exc.strerror or exc}")
    assert proc.stdout is not None and proc.stderr is not None
    out, err = _Tail(), _Tail()
    with proc.stdout, proc.stderr:
        pipes = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
        if _collect(proc, pipes, time.monotonic() + timeout):
            return HookResult(argv, proc.returncode, out.text(), err.text())
        left = _kill_everything(proc, {os.fstat(fd).st_ino for fd in pipes})
    extra = f" and {left} process(es) it left holding its output" if left else ""
    return HookResult(argv, None, out.text(), err.text(),
                      f"timed out after {timeout:g}s; killed its process group{extra}")


def _collect(proc: subprocess.Popen[bytes], pipes: dict[int, _Tail], deadline: float) -> bool:
    """Read both pipes until they close and the hook exits (True) or ``deadline`` (False)."""
    with selectors.DefaultSelector() as selector:
        for fd, tail in pipes.items():
            selector.register(fd, selectors.EVENT_READ, tail)
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            for key, _events in selector.select(left):
                chunk = os.read(key.fd, _READ_SIZE)
                if chunk:
                    key.data.add(chunk)
                else:
                    selector.unregister(key.fd)
    try:
        proc.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return False
    return True


def _kill_everything(proc: subprocess.Popen[bytes], pipe_inodes: set[int]) -> int:
    """SIGKILL the hook's process group, its descendants and whatever still holds its pipes;
    returns how many processes beyond the group's leader were found. Never waits on them."""
    found: set[int] = set()
    for _round in range(3):  # a process may fork between a look and the kill: look again
        parents = _parents()
        # our other children (other hooks being started) hold these pipes only until exec
        ours = {pid for pid, parent in parents.items() if parent == os.getpid()}
        fresh = (_descendants(proc.pid, parents) | (_pipe_holders(pipe_inodes) - ours)) - found
        fresh -= {proc.pid, os.getpid()}
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in fresh:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        found |= fresh
        if not fresh:
            break
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(_REAP_WAIT)
    return len(found)


def _pids() -> Iterator[int]:
    with contextlib.suppress(OSError):  # no /proc: only the process group is killed
        yield from (int(name) for name in os.listdir("/proc") if name.isdigit())


def _parents() -> dict[int, int]:
    """Each process's parent, from /proc."""
    parents: dict[int, int] = {}
    for pid in _pids():
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{pid}/stat", "rb") as handle:
                stat = handle.read()
            parents[pid] = int(stat.rsplit(b")", 1)[1].split()[1])  # after "(comm)": state ppid
    return parents


def _descendants(root: int, parents: dict[int, int]) -> set[int]:
    """Every process below ``root`` (seen only while ``root`` still lives)."""
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _pipe_holders(inodes: set[int]) -> set[int]:
    """Processes with one of these pipes open, e.g. a grandchild that started its own
    session and so escaped the process group."""
    links = {f"pipe:[{inode}]" for inode in inodes}
    holders: set[int] = set()
    for pid in _pids():
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") in links:
                        holders.add(pid)
                        break
    return holders


def run_hooks(hooks: Sequence[Sequence[str]], event: str, facts: VMFacts, *,
              timeout: float = 60.0, base_env: Mapping[str, str] | None = None
              ) -> list[HookResult]:
    """Run every hook for ``event``; raise HookFailed (after running all) if any failed."""
    if not hooks:
        return []
    checked = [validate_hook(h) for h in hooks]
    env = hook_environment(event, facts, base_env)
    results: list[HookResult] = []
    for argv in checked:
        result = _run_one(argv, env, timeout)
        results.append(result)
        level = log.info if result.ok else log.warning
        level("network_hook.done", hook_event=event, program=argv[0], vmid=facts.vmid,
              returncode=result.returncode, error=result.error,
              stderr=result.stderr[-500:] if not result.ok else None)
    failed = [r for r in results if not r.ok]
    if failed:
        parts = [f"{r.argv[0]}: {r.error or f'exit {r.returncode}'}" for r in failed]
        raise HookFailed(f"{len(failed)} {event} hook(s) failed for VM {facts.vmid} "
                         f"({'; '.join(parts)}); fix the hook and the step is retried",
                         results)
    return results
