"""Start the PVE simulator as a separate process (for tests and the demo).

The child runs ``python -m provisioner.pvesim``; its stdout/stderr go to FILES in the work
directory (never an undrained pipe), and the launcher waits for the "Listening on" and
"CA certificate" lines there. The API token travels in the environment, never in argv.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import requests

from provisioner.processes import terminate
from provisioner.pvesim.__main__ import TOKEN_ENV

_LISTENING = re.compile(r"^Listening on https://(\[[^\]]+\]|[^:\s]+):(\d+)\s*$", re.M)
_CA = re.compile(r"^CA certificate: (.+?)\s*$", re.M)


class PveSimError(RuntimeError):
    pass


@dataclass
class PveSim:
    """A running simulator process and how to reach it."""

    process: subprocess.Popen[bytes]
    host: str
    port: int
    url: str
    ca_path: Path
    token_id: str
    token_secret: str = field(repr=False)
    state_file: Path
    workdir: Path = field(default=Path("."))
    log_path: Path = field(default=Path("."))
    snippets_dir: Path | None = None
    launch_args: dict[str, Any] = field(default_factory=dict, repr=False)

    # -- control API --------------------------------------------------------------------

    def control(self, method: str, path: str, body: Any = None, *, timeout: float = 10) -> Any:
        """Call the loopback control API (``/_sim/...``), verifying TLS with the CA."""
        resp = requests.request(method, f"{self.url}/_sim/{path.lstrip('/')}", json=body,
                                verify=str(self.ca_path), timeout=timeout)
        if resp.status_code != 200:
            raise PveSimError(f"pvesim control {method} {path}: {resp.status_code} {resp.reason}")
        return resp.json()

    def _control_object(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        """:meth:`control` for the endpoints that answer a JSON object."""
        return cast(dict[str, Any], self.control(method, path, body))

    def state(self) -> dict[str, Any]:
        """Everything the simulator knows: nodes, VMs (config, status, lock, pool, tags,
        description, smbios uuid), tasks (with logs) and pending faults."""
        return self._control_object("GET", "state")

    def vm(self, vmid: int) -> dict[str, Any] | None:
        """One VM from :meth:`state`, or None."""
        vms = cast(list[dict[str, Any]], self.state()["vms"])
        for vm in vms:
            if vm["vmid"] == vmid:
                return vm
        return None

    def inject(self, **fault: Any) -> dict[str, Any]:
        """Add a fault rule, e.g. ``inject(op="clone", mode="fail_task", message="...")``."""
        return self._control_object("POST", "faults", fault)

    def clear_faults(self) -> None:
        self.control("DELETE", "faults")

    def create_vm(self, **spec: Any) -> dict[str, Any]:
        """Create a VM behind the API's back (e.g. a foreign VM without markers)."""
        return self._control_object("POST", "vms", spec)

    def update_vm(self, vmid: int, **spec: Any) -> dict[str, Any]:
        return self._control_object("POST", f"vms/{vmid}", spec)

    def delete_vm(self, vmid: int) -> None:
        self.control("DELETE", f"vms/{vmid}")

    def set_node(self, node: str, **spec: Any) -> dict[str, Any]:
        return self._control_object("POST", f"nodes/{node}", spec)

    def finish_task(self, upid: str, exitstatus: str = "OK") -> dict[str, Any]:
        return self._control_object("POST", f"tasks/{upid}/finish", {"exitstatus": exitstatus})

    def reset(self) -> None:
        self.control("POST", "reset")

    # -- process ------------------------------------------------------------------------

    @property
    def token(self) -> str:
        """``USER@REALM!TOKENID=SECRET`` (keep out of logs)."""
        return f"{self.token_id}={self.token_secret}"

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s; reaps the child. Idempotent."""
        terminate(self.process)

    def kill(self) -> None:
        """SIGKILL (a crash: nothing is flushed or cleaned up)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)

    def restart(self, **overrides: Any) -> PveSim:
        """Stop (if running) and start again on the same state file, token and CA."""
        self.stop()
        args = {**self.launch_args, **overrides}
        return start_pvesim(**args)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def _child_env(token: str) -> dict[str, str]:
    """The environment of the child: the token (never in argv) and this very source tree."""
    env = dict(os.environ)
    env[TOKEN_ENV] = token
    # make the child import this very source tree, installed or not
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _wait_listening(process: subprocess.Popen[bytes], out_path: Path, log_path: Path,
                    startup_timeout: float) -> tuple[re.Match[str], re.Match[str]]:
    """The "Listening on" and "CA certificate" lines, once both are out; else PveSimError."""
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        text = _read(out_path)
        listening = _LISTENING.search(text)
        ca = _CA.search(text)
        if listening and ca:
            return listening, ca
        if process.poll() is not None:
            raise PveSimError(f"pvesim exited with {process.returncode} before listening:\n"
                              f"{_read(log_path)[-4000:]}")
        time.sleep(0.02)
    process.kill()
    process.wait(timeout=5)
    raise PveSimError(f"pvesim did not start within {startup_timeout}s:\n"
                      f"{_read(log_path)[-4000:]}")


def start_pvesim(
    workdir: Path,
    *,
    nodes: tuple[str, ...] | list[str] = ("pve1", "pve2"),
    template_vmid: int = 9001,
    clone_seconds: float = 0.2,
    task_seconds: float = 0.05,
    pool: str = "blockhost",
    state_file: Path | None = None,
    token: str | None = None,
    snippets_dir: Path | None = None,
    bridges: tuple[str, ...] = ("vmbr0",),
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout: float = 20.0,
) -> PveSim:
    """Run ``python -m provisioner.pvesim`` and wait until it listens.

    ``token`` is ``USER@REALM!TOKENID=SECRET``; when None a ``root@pam!blockhost=<uuid4>``
    token is made up (root bypasses the pool privilege checks)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    state_file = Path(state_file) if state_file is not None else workdir / "pvesim-state.json"
    if token is None:
        token = f"root@pam!blockhost={uuid.uuid4()}"
    token_id, _, token_secret = token.partition("=")
    if not token_id or not token_secret or "!" not in token_id:
        raise ValueError("token must look like USER@REALM!TOKENID=SECRET")

    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_path = workdir / f"pvesim-{stamp}-{os.getpid()}-{uuid.uuid4().hex[:6]}.out"
    log_path = out_path.with_suffix(".log")
    argv = [
        sys.executable, "-m", "provisioner.pvesim",
        "--host", host, "--port", str(port),
        "--nodes", ",".join(nodes),
        "--template", str(template_vmid),
        "--clone-seconds", str(clone_seconds),
        "--task-seconds", str(task_seconds),
        "--state-file", str(state_file),
        "--workdir", str(workdir),
        "--pool", pool,
        "--bridges", ",".join(bridges),
    ]
    if snippets_dir is not None:
        argv += ["--snippets-dir", str(snippets_dir)]
    with open(out_path, "wb") as out, open(log_path, "ab") as err:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                   env=_child_env(token), start_new_session=True)
    listening, ca = _wait_listening(process, out_path, log_path, startup_timeout)
    shown_host, port_text = listening.group(1), listening.group(2)
    bound = int(port_text)
    return PveSim(
        process=process,
        host=shown_host.strip("[]"),
        port=bound,
        url=f"https://{shown_host}:{bound}",
        ca_path=Path(ca.group(1)),
        token_id=token_id,
        token_secret=token_secret,
        state_file=state_file,
        workdir=workdir,
        log_path=log_path,
        snippets_dir=snippets_dir,
        launch_args={
            "workdir": workdir, "nodes": tuple(nodes), "template_vmid": template_vmid,
            "clone_seconds": clone_seconds, "task_seconds": task_seconds, "pool": pool,
            "state_file": state_file, "token": token, "snippets_dir": snippets_dir,
            "bridges": tuple(bridges), "host": host, "port": 0,
            "startup_timeout": startup_timeout,
        },
    )


def dump_state(sim: PveSim) -> str:
    """The simulator state as pretty JSON (for test failure messages)."""
    return json.dumps(sim.state(), indent=2, sort_keys=True)
