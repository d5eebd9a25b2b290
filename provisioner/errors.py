"""Typed errors of the provisioner (host side).

PVE reports every failure as a message string - in the HTTP reason phrase for synchronous
errors, in a task's ``exitstatus`` for errors raised inside a worker. :func:`classify` maps
(status, message) to one of the :class:`PveError` subclasses so callers decide by type:

The last column is the class's ``permanent`` flag, the classification the reconciler's failure
policy reads (:mod:`listener.reconcile.failures`): a permanent failure needs an operator, anything
else is worth another try of the whole step. ``retryable`` (Locked, Transient) says more narrowly
that repeating the very same call may help, e.g. a Terraform run that met a lock.

===================  ===========================================================  ==========
class                typical message / cause                                      permanent?
===================  ===========================================================  ==========
Locked               ``VM is locked (clone)``, ``can't lock file ... got timeout``  no
AlreadyExists        ``unable to create VM N: config file already exists``,         yes
                     ``VM N already exists``; subclass VmidTaken: the id is held by  (VmidTaken:
                     a VM that is not provably ours (allocate another id)           no)
NotFound             ``Configuration file 'nodes/x/qemu-server/N.conf' does not     yes
                     exist``, ``unable to find configuration file for VM N``
PermissionDenied     HTTP 401 / 403, ``Permission check failed (/vms/N, ...)``      yes
Transient            other 5xx (not 501), 595/596 (AnyEvent), 408/429, connection  no
                     errors, timeouts, a task still running at the deadline
TaskFailed           a UPID task ended with an error not matched above              no*
OwnershipMismatch    a VM's markers do not match ours: refused, never "fixed"      yes
PveError             anything else (e.g. 400 parameter verification)               yes
===================  ===========================================================  ==========

(*) a failed task left PVE in a clean state (e.g. a failed clone removed its VM), so the
caller may retry the whole step; the class only says the step itself failed.
"""

from __future__ import annotations

from typing import ClassVar


class ProvisionerError(Exception):
    """Base class of every error raised by ``provisioner``."""

    #: True when no retry can fix it without an operator (see the table above).
    permanent: ClassVar[bool] = False


class PveError(ProvisionerError):
    """A Proxmox VE API failure.

    ``status`` is the HTTP status, or 0 when the failure did not come from an HTTP response
    (a task's exit status, a connection error, a local ownership check). ``message`` is PVE's
    message (never contains credentials). ``errors`` holds PVE's per-parameter errors (400),
    ``upid`` the task when the failure came from one.
    """

    #: True when the very same call may succeed if simply repeated (a lock, a busy node).
    retryable: ClassVar[bool] = False
    #: A PVE error nobody recognised (e.g. 400 parameter verification) is the request's fault.
    permanent: ClassVar[bool] = True

    def __init__(self, status: int, message: str, *, errors: dict[str, str] | None = None,
                 upid: str | None = None) -> None:
        self.status = status
        self.message = message.strip()
        self.errors = errors
        self.upid = upid
        text = f"{status} {self.message}" if status else self.message
        if errors:
            text += " (" + "; ".join(f"{k}: {v}" for k, v in sorted(errors.items())) + ")"
        super().__init__(text)


class Locked(PveError):
    """The VM (or its config file) is locked: ``VM is locked (clone)``, lock timeouts."""

    retryable = True
    permanent = False


class AlreadyExists(PveError):
    """The VMID is taken (and, from the backend, not by a VM that is provably ours)."""

    permanent = True


class VmidTaken(AlreadyExists):
    """The VMID is held by a VM we cannot prove is ours (a foreign VM, or one invisible to our
    pool-scoped token): skip this id and allocate another one - never reuse or touch it."""

    permanent = False


class NotFound(PveError):
    """The VM (or node, pool, task) does not exist."""


class TaskFailed(PveError):
    """A UPID task ended with an error exit status."""

    permanent = False


class PermissionDenied(PveError):
    """401 (bad or missing API token) or 403 (privilege check failed)."""

    permanent = True


class Transient(PveError):
    """Worth retrying: 5xx without a known meaning, 595/596, connection errors, timeouts,
    a task that did not finish in time."""

    retryable = True
    permanent = False


class OwnershipMismatch(PveError):
    """A VM's ownership markers (pool, tag, description marker, smbios uuid) do not match:
    it is not ours (or no longer the instance we created) - refuse, never repair."""

    permanent = True


_LOCKED = ("is locked", "can't lock file", "got lock request timeout", "lock request timeout")
_EXISTS = ("already exists", "config file already exists")
_MISSING = ("does not exist", "unable to find configuration file", "no such vm",
            "no such task", "no such cluster node")
_DENIED = ("permission check failed", "permission denied", "no ticket",
           "only root may use this option")


def classify(status: int, message: str) -> type[PveError]:
    """Map an HTTP status (0 for task exit statuses) and PVE message to an error class.

    Pure: looks only at its arguments. The message wins over the status where it is specific
    (PVE uses 500 for nearly every ``die``)."""
    text = (message or "").lower()
    if status in (401, 403) or any(s in text for s in _DENIED):
        return PermissionDenied
    if any(s in text for s in _LOCKED):
        return Locked
    if any(s in text for s in _EXISTS):
        return AlreadyExists
    if status == 404 or any(s in text for s in _MISSING):
        return NotFound
    if (status >= 500 and status != 501) or status in (408, 429):
        return Transient
    if status == 0:
        return TaskFailed
    return PveError
