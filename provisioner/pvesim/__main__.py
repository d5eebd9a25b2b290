"""``blockhost-pvesim``: run the PVE API simulator.

Prints exactly two lines on stdout once it serves (each flushed)::

    Listening on https://HOST:PORT
    CA certificate: PATH

plus ``API token: USER@REALM!TOKENID=SECRET`` first when it generated the token itself.

The API token (``USER@REALM!TOKENID=SECRET``) is taken from, in order: ``--token-file FILE``,
``--token`` (development only: argv is visible to every local user via ``ps``), the environment
variable ``BLOCKHOST_PVESIM_TOKEN``; otherwise a ``root@pam!blockhost=<uuid4>`` token is generated
and printed (it is a simulator).

The TLS CA (certificate + key) is created with trustme on first start and kept in the work
directory, so a restart against the same directory keeps the same CA file valid.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from provisioner.pvesim.sim_config import GIB, SimConfig

if TYPE_CHECKING:
    from provisioner.pvesim.server.httpd import PveSimServer

TOKEN_ENV = "BLOCKHOST_PVESIM_TOKEN"


def _write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def prepare_tls(workdir: Path, hosts: list[str]) -> tuple[Path, Path]:
    """Load or create the CA in ``workdir``; issue a fresh server certificate for ``hosts``.

    Returns (ca_cert_path, server_chain_path)."""
    import trustme

    ca_cert = workdir / "pvesim-ca.pem"
    ca_key = workdir / "pvesim-ca.key"
    if ca_cert.exists() and ca_key.exists():
        ca = trustme.CA.from_pem(ca_cert.read_bytes(), ca_key.read_bytes())
    else:
        ca = trustme.CA(organization_name="blockhost pvesim")
        _write_private(ca_key, ca.private_key_pem.bytes())
        _write_private(ca_cert, ca.cert_pem.bytes(), 0o644)
    leaf = ca.issue_cert(*hosts, common_name="pvesim")
    chain = workdir / "pvesim-server.pem"
    _write_private(chain, leaf.private_key_and_cert_chain_pem.bytes())
    return ca_cert, chain


def _resolve_token(args: argparse.Namespace) -> tuple[str, bool]:
    if args.token_file:
        return Path(args.token_file).read_text(encoding="utf-8").strip(), False
    if args.token:
        return args.token, False
    env = os.environ.get(TOKEN_ENV)
    if env:
        return env, False
    return f"root@pam!blockhost={uuid.uuid4()}", True


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="blockhost-pvesim",
        description="Proxmox VE API simulator (HTTPS, API tokens, UPID tasks, faults).",
    )
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=0, help="port (default 0 = any free port)")
    ap.add_argument("--nodes", default="pve1,pve2", help="comma-separated node names")
    ap.add_argument("--template", type=int, default=9001, help="template VMID (on the first node)")
    ap.add_argument("--clone-seconds", type=float, default=2.0, help="duration of clone tasks")
    ap.add_argument("--task-seconds", type=float, default=0.05,
                    help="duration of other tasks (start, stop, resize, destroy, ...)")
    ap.add_argument("--state-file", help="JSON state file (default WORKDIR/pvesim-state.json)")
    ap.add_argument("--workdir", help="directory for the CA and server certificate "
                                      "(default: the state file's directory, else a temp dir)")
    ap.add_argument("--token", help="USER@REALM!TOKENID=SECRET (development only: argv is "
                                    f"visible in ps; prefer --token-file or ${TOKEN_ENV})")
    ap.add_argument("--token-file", help="file holding USER@REALM!TOKENID=SECRET")
    ap.add_argument("--pool", default="blockhost",
                    help="pool the (non-root) token may manage; '' disables privilege checks")
    ap.add_argument("--snippets-dir",
                    help="directory backing storage 'local' (snippets/ below it); when set, "
                         "start checks that cicustom snippet files exist")
    ap.add_argument("--bridges", default="vmbr0", help="bridges present on every node")
    ap.add_argument("--node-memory-gb", type=int, default=64, help="memory per node (GiB)")
    ap.add_argument("--quiet", action="store_true", help="no per-request log on stderr")
    return ap


def _workdir_and_state_file(args: argparse.Namespace) -> tuple[Path, Path]:
    """``--state-file`` and ``--workdir`` default to each other, else to a fresh temp dir."""
    if args.state_file:
        state_file = Path(args.state_file).resolve()
        workdir = Path(args.workdir).resolve() if args.workdir else state_file.parent
    else:
        if args.workdir:
            workdir = Path(args.workdir).resolve()
        else:
            import tempfile
            workdir = Path(tempfile.mkdtemp(prefix="pvesim-"))
        state_file = workdir / "pvesim-state.json"
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir, state_file


def _sim_config(args: argparse.Namespace, nodes: list[str], state_file: Path) -> SimConfig:
    return SimConfig(
        nodes=nodes,
        template_vmid=args.template,
        pool=args.pool or None,
        clone_seconds=args.clone_seconds,
        task_seconds=args.task_seconds,
        state_file=state_file,
        snippets_dir=Path(args.snippets_dir).resolve() if args.snippets_dir else None,
        bridges=tuple(b.strip() for b in args.bridges.split(",") if b.strip()),
        node_maxmem=args.node_memory_gb * GIB,
    )


def _tls_hosts(host: str) -> list[str]:
    """Names the server certificate is issued for: loopback, plus the bound address."""
    hosts = ["127.0.0.1", "localhost", "::1"]
    if host not in hosts and host not in ("0.0.0.0", "::"):
        hosts.append(host)
    return hosts


def _serve(server: PveSimServer) -> None:
    """Serve until SIGTERM or SIGINT."""

    def _stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        server.serve_forever(poll_interval=0.05)
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    from provisioner.pvesim.server.auth import parse_token
    from provisioner.pvesim.server.httpd import PveSimServer, make_ssl_context, start_ticker
    from provisioner.pvesim.simulator import Simulator

    nodes = [n.strip() for n in args.nodes.split(",") if n.strip()]
    if not nodes:
        print("blockhost-pvesim: --nodes needs at least one node", file=sys.stderr)
        return 2
    workdir, state_file = _workdir_and_state_file(args)

    token_text, generated = _resolve_token(args)
    try:
        token_id, token_secret = parse_token(token_text)
    except ValueError as exc:
        print(f"blockhost-pvesim: bad API token: {exc}", file=sys.stderr)
        return 2

    try:
        sim = Simulator(_sim_config(args, nodes, state_file))
    except (OSError, ValueError) as exc:
        print(f"blockhost-pvesim: cannot load state {state_file}: {exc}", file=sys.stderr)
        return 1

    try:
        ca_path, chain = prepare_tls(workdir, _tls_hosts(args.host))
    except ModuleNotFoundError as exc:  # trustme is in the 'demo' extra, not the daemon's deps
        print(f"blockhost-pvesim: {exc.name} is not installed: the simulator is development "
              "tooling; install blockhost-provisioner[demo]", file=sys.stderr)
        return 1
    server = PveSimServer((args.host, args.port), sim, make_ssl_context(str(chain)), token_id,
                          token_secret, quiet=args.quiet)
    start_ticker(sim)

    port = server.server_address[1]
    shown_host = f"[{args.host}]" if ":" in args.host else args.host
    if generated:
        print(f"API token: {token_id}={token_secret}", flush=True)
    print(f"Listening on https://{shown_host}:{port}", flush=True)
    print(f"CA certificate: {ca_path}", flush=True)
    _serve(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
