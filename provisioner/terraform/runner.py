"""Run ``terraform init/apply/destroy`` in one VM's directory, safely.

- Always ``-input=false -no-color`` and a ``-lock-timeout`` (the reference system had none and
  its GC and provisioner collided on one shared state lock: bug 21). Each VM directory has its
  own local state (``terraform.tfstate``), so VMs never wait on each other.
- Provider credentials reach Terraform through the environment only (never argv, which any
  local user can read in /proc); the child gets a small allow-listed environment, not ours.
- Terraform's output never reaches our stdout: every line goes to structlog (secrets
  scrubbed), and errors are summarized in one line from Terraform's JSON diagnostics.
- A missing binary or a failed ``init`` raises one clear error saying what to install or
  configure.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from structlog.typing import FilteringBoundLogger

from provisioner.errors import ProvisionerError, classify

log = structlog.get_logger(__name__)

STATE_FILE = "terraform.tfstate"
INIT_MARKER = ".blockhost-init"
DIR_LOCK = ".blockhost.lock"
#: Environment variables passed through to Terraform (everything else is dropped).
PASSTHROUGH_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ", "SSL_CERT_FILE",
                   "SSL_CERT_DIR", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy",
                   "http_proxy", "no_proxy", "TF_CLI_CONFIG_FILE", "TF_PLUGIN_CACHE_DIR",
                   "SSH_AUTH_SOCK")
#: ... plus these prefixes: the provider's SSH settings (snippet upload needs SSH to the node)
PASSTHROUGH_PREFIXES = ("PROXMOX_VE_SSH_",)
_LEVELS = {"trace": "debug", "debug": "debug", "info": "info", "warn": "warning",
           "error": "error"}
INSTALL_HINT = ("install Terraform >= 1.5 (https://developer.hashicorp.com/terraform/install) "
                "and put it on PATH")


class TerraformError(ProvisionerError):
    """A terraform command failed; ``retryable`` says whether trying again may help
    (state lock held, PVE lock or transient API failure)."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class TerraformNotInstalled(TerraformError):
    """The terraform binary is not on PATH (or not executable)."""

    permanent = True


class TerraformInitFailed(TerraformError):
    """``terraform init`` failed: provider not downloadable, bad version constraint, ..."""

    permanent = True


@dataclass
class RunResult:
    """What one terraform command did."""

    returncode: int
    messages: list[dict[str, Any]] = field(default_factory=list)  # -json lines
    text: list[str] = field(default_factory=list)  # non-JSON lines (scrubbed)

    def change_summary(self) -> dict[str, int]:
        for msg in reversed(self.messages):
            if msg.get("type") == "change_summary":
                return {k: int(v) for k, v in (msg.get("changes") or {}).items()
                        if isinstance(v, int)}
        return {}

    def changed(self) -> bool:
        """True if the apply/destroy added, changed, removed or imported anything."""
        summary = self.change_summary()
        return any(summary.get(k, 0) for k in ("add", "change", "remove", "import"))

    def errors(self) -> list[str]:
        out = []
        for msg in self.messages:
            if msg.get("type") == "diagnostic" and msg.get("@level") == "error":
                diag = msg.get("diagnostic") or {}
                text = str(diag.get("summary") or msg.get("@message") or "").strip()
                detail = " ".join(str(diag.get("detail") or "").split())
                out.append(f"{text}: {detail}" if detail else text)
        if not out:
            out = [line for line in self.text if line.strip().startswith(("Error", "│ Error"))]
        if not out:
            out = [line for line in self.text if line.strip()][-3:]
        return out


def _json_object(line: str) -> dict[str, Any] | None:
    try:
        msg = json.loads(line)
    except json.JSONDecodeError:
        return None
    return msg if isinstance(msg, dict) else None


def _record(line: str, result: RunResult, blog: FilteringBoundLogger, *,
            json_lines: bool) -> None:
    """Keep and log one output line: a ``-json`` message, else plain text."""
    msg = _json_object(line) if json_lines and line.startswith("{") else None
    if msg is not None:
        result.messages.append(msg)
        emit = _LEVELS.get(str(msg.get("@level")), "info")
        getattr(blog, emit)("terraform.output", type=msg.get("type"),
                            message=msg.get("@message"))
        return
    result.text.append(line)
    if line.strip():
        blog.info("terraform.output", message=line)


class TerraformRunner:
    """Runs terraform in per-VM directories with a controlled environment."""

    def __init__(self, *, binary: str = "terraform", lock_timeout_s: int = 120,
                 env: Mapping[str, str] | None = None, secrets: Sequence[str] = (),
                 plugin_cache_dir: Path | None = None, timeout_s: float = 3600,
                 dir_lock_timeout_s: float = 600) -> None:
        self.binary = binary
        self.lock_timeout_s = int(lock_timeout_s)
        self._env = dict(env or {})
        self._secrets = [s for s in secrets if s]
        self.plugin_cache_dir = plugin_cache_dir
        self.timeout_s = timeout_s
        self.dir_lock_timeout_s = dir_lock_timeout_s

    def __repr__(self) -> str:  # never show the environment (credentials)
        return f"TerraformRunner(binary={self.binary!r}, lock_timeout_s={self.lock_timeout_s})"

    # ------------------------------------------------------------------ plumbing

    def binary_path(self) -> str:
        found = shutil.which(self.binary)
        if not found:
            raise TerraformNotInstalled(
                f"terraform binary {self.binary!r} not found: proxmox.backend is 'terraform', "
                f"so {INSTALL_HINT} (or switch proxmox.backend to 'api')")
        return found

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k in PASSTHROUGH_ENV or k.startswith(PASSTHROUGH_PREFIXES)}
        env.update(TF_IN_AUTOMATION="1", TF_INPUT="0", CHECKPOINT_DISABLE="1")
        if self.plugin_cache_dir is not None:
            self.plugin_cache_dir.mkdir(parents=True, exist_ok=True)
            env["TF_PLUGIN_CACHE_DIR"] = str(self.plugin_cache_dir)
        env.update(self._env)
        return env

    def run(self, workdir: Path, args: Sequence[str], *, json_lines: bool = False) -> RunResult:
        """Run ``terraform ARGS`` in ``workdir``; log every output line; never raise on a
        non-zero exit (callers decide)."""
        argv = [self.binary_path(), *args]
        blog = log.bind(dir=str(workdir), command=args[0])
        blog.info("terraform.run", args=list(args))
        started = time.monotonic()
        proc = subprocess.Popen(argv, cwd=workdir, env=self.environment(),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                umask=0o077)  # state and plugins private, whoever runs us
        timer = threading.Timer(self.timeout_s, _kill_group, args=(proc,))
        timer.daemon = True
        timer.start()
        result = RunResult(returncode=-1)
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = self.scrub(raw.decode("utf-8", "replace").rstrip("\n"))
                _record(line, result, blog, json_lines=json_lines)
            result.returncode = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                _kill_group(proc)
                proc.wait()
        blog.info("terraform.exit", returncode=result.returncode,
                  seconds=round(time.monotonic() - started, 3))
        return result

    def _fail(self, what: str, workdir: Path, result: RunResult,
              cls: type[TerraformError] = TerraformError, hint: str = "") -> TerraformError:
        errors = result.errors() or [f"exit status {result.returncode}"]
        text = "; ".join(errors)[:600]
        lowered = text.lower()
        retryable = ("state lock" in lowered or ("lock" in lowered and "timeout" in lowered)
                     or classify(0, text).retryable)
        message = f"terraform {what} failed in {workdir}: {text}"
        if hint:
            message += f"; {hint}"
        log.warning("terraform.failed", command=what, dir=str(workdir), error=text,
                    retryable=retryable)
        return cls(message, retryable=retryable)

    # ------------------------------------------------------------------ commands

    def _argv(self, command: str, *flags: str) -> list[str]:
        """``command`` with the flags every run gets (no prompts, no colours, a lock
        timeout) plus its own."""
        return [command, "-input=false", "-no-color", f"-lock-timeout={self.lock_timeout_s}s",
                *flags]

    def init(self, workdir: Path) -> None:
        """``terraform init`` (always runs)."""
        result = self.run(workdir, self._argv("init"))
        if result.returncode != 0:
            raise self._fail("init", workdir, result, TerraformInitFailed,
                             "make the pinned provider available (network access to "
                             "registry.terraform.io, or a provider mirror configured via "
                             "TF_CLI_CONFIG_FILE / TF_PLUGIN_CACHE_DIR)")
        _write_private(workdir / INIT_MARKER, _init_key(workdir).encode())

    def ensure_init(self, workdir: Path) -> bool:
        """Run init unless it already succeeded for the current ``terraform`` block;
        returns True if it ran."""
        marker = workdir / INIT_MARKER
        if marker.exists() and marker.read_text() == _init_key(workdir):
            return False
        self.init(workdir)
        return True

    def apply(self, workdir: Path) -> RunResult:
        """``terraform apply -auto-approve``; returns the result (see ``changed()``)."""
        result = self.run(workdir, self._argv("apply", "-auto-approve", "-json"),
                          json_lines=True)
        if result.returncode != 0:
            raise self._fail("apply", workdir, result)
        return result

    def plan_has_changes(self, workdir: Path) -> bool:
        """``terraform plan -detailed-exitcode``: True if applying would change anything."""
        result = self.run(workdir, self._argv("plan", "-detailed-exitcode", "-json"),
                          json_lines=True)
        if result.returncode not in (0, 2):
            raise self._fail("plan", workdir, result)
        return result.returncode == 2

    def destroy(self, workdir: Path) -> RunResult:
        """``terraform destroy -auto-approve`` of everything in this directory's state."""
        result = self.run(workdir, self._argv("destroy", "-auto-approve", "-json"),
                          json_lines=True)
        if result.returncode != 0:
            raise self._fail("destroy", workdir, result)
        return result

    def state_rm(self, workdir: Path, address: str) -> None:
        """Forget ``address`` without touching the real object."""
        result = self.run(workdir, ["state", "rm", f"-lock-timeout={self.lock_timeout_s}s",
                                    address])
        if result.returncode != 0:
            raise self._fail("state rm", workdir, result)

    @contextlib.contextmanager
    def dir_lock(self, workdir: Path) -> Iterator[None]:
        """Serialize our own operations on one VM directory (render + terraform)."""
        workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(workdir / DIR_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + self.dir_lock_timeout_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise TerraformError(f"{workdir} is busy (another operation holds "
                                             f"{DIR_LOCK}); retry later",
                                             retryable=True) from None
                    time.sleep(0.1)
            yield
        finally:
            os.close(fd)


def state_addresses(workdir: Path) -> list[str]:
    """Managed resource addresses recorded in the directory's local state (read directly:
    no terraform process, no lock needed for a read of an atomically replaced file)."""
    path = workdir / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, json.JSONDecodeError) as exc:
        raise TerraformError(f"state file {path} is unreadable ({exc}); restore it from "
                             f"{path}.backup or inspect it by hand") from None
    out = []
    for res in state.get("resources") or []:
        if res.get("mode") == "managed" and res.get("instances"):
            out.append(f"{res.get('type')}.{res.get('name')}")
    return sorted(out)


def _init_key(workdir: Path) -> str:
    """What init depends on: the ``terraform`` block (providers and versions)."""
    try:
        doc = json.loads((workdir / "main.tf.json").read_text(encoding="utf-8"))
        block = doc.get("terraform") if isinstance(doc, dict) else None
    except (OSError, json.JSONDecodeError):
        block = None
    return hashlib.sha256(json.dumps(block, sort_keys=True).encode()).hexdigest()


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
