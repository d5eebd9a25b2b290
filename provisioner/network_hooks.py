"""Operator hooks run after a VM is created or destroyed (e.g. add/remove an IPv6 host route).

A hook is an argv list - never a shell string - whose first item is an absolute path. It gets
the VM's facts as environment variables (validated values only, so nothing chain-controlled can
smuggle in syntax), a minimal base environment, no stdin, and a timeout after which its whole
process group is killed. All hooks of an event run, in order; afterwards :class:`HookFailed`
lists the ones that failed, so the caller can retry the step (hooks must be idempotent, as the
reference's root agent's route commands are).

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
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import structlog

from provisioner.backend import NAME_RE
from provisioner.errors import ProvisionerError

log = structlog.get_logger(__name__)

EVENTS = ("created", "destroyed")
_BRIDGE_RE = re.compile(r"^[-_.\w]{1,64}$")
_TAIL = 2000
#: variables passed through from the parent environment (nothing else leaks into hooks)
BASE_ENV_KEYS = ("PATH", "LANG", "LC_ALL", "TZ")


class HookFailed(ProvisionerError):
    """One or more network hooks exited non-zero, timed out or could not be started."""


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


def _run_one(argv: tuple[str, ...], env: dict[str, str], timeout: float) -> HookResult:
    try:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True, cwd="/")
    except OSError as exc:
        return HookResult(argv, None, "", "", f"could not start: {exc.strerror or exc}")
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return HookResult(argv, None, out.decode(errors="replace")[-_TAIL:],
                          err.decode(errors="replace")[-_TAIL:], f"timed out after {timeout:g}s")
    return HookResult(argv, proc.returncode, out.decode(errors="replace")[-_TAIL:],
                      err.decode(errors="replace")[-_TAIL:])


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
                         f"({'; '.join(parts)}); fix the hook and the step is retried")
    return results
