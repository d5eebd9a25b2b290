"""Head latency: block mined -> event journaled by the real daemon, polling vs websocket.

``python -m bench.latency [--samples 30] [--poll-interval 0.5] [--json]`` starts anvil with
automine off (blocks only on demand), installs the ``SubscriptionCreated`` emitter of
``bench/emitter.py`` as the subscription contract, starts the PVE simulator (the daemon wants
a Proxmox backend) and runs ``blockhost listen`` as a subprocess, once per mode:

- ``polling``: ``chain.ws_url`` unset, the loop scans every ``--poll-interval`` seconds;
- ``websocket``: ``chain.ws_url`` set, a ``newHeads`` notification wakes the loop.

Both use ``confirmations: 0`` and the same ``poll_interval``. Per sample: one emitter call
goes to the mempool, the clock starts, ``evm_mine`` puts it in a block, and the bench reads
the listener's SQLite ``events`` table (read-only) every ~2 ms until the row is there. A
random pause (0 to ``poll_interval``) before each sample keeps the samples from locking onto
the poll timer's phase. The chain clock is set past every emitted ``expiresAt`` + grace, so
the reconciler has nothing to build and only the chain path is measured.

Exit codes: 0 done, 1 the chain, simulator or listener failed or an event never appeared,
2 bad arguments.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import yaml
from eth_abi.abi import encode as abi_encode
from rich.console import Console
from rich.table import Table

from bench.cli_args import (
    add_output_options,
    add_subset_option,
    command_line,
    parse_subset,
    positive_float,
    positive_int,
    print_json,
    report_console,
)
from bench.emitter import (
    EMITTER_ADDRESS,
    GAS_PER_CALL,
    GAS_PER_LOG,
    SENDER,
    JsonRpc,
    emitter_runtime,
)
from listener.crypto.key_files import generate_key_file
from listener.devkit.devchain import Anvil, start_anvil
from listener.devkit.devenv import write_secret_file
from listener.errors import UserError

CHAIN_ID = 31337
MODES = ("polling", "websocket")
#: Block timestamps start here: past every emitted expiresAt (~1.9e9) plus any grace period.
CHAIN_CLOCK = 2_100_000_000
#: How often the bench looks for the journaled row.
DB_POLL_SECONDS = 0.002


class LatencyError(RuntimeError):
    """The rig could not measure (listener died, event never journaled)."""


@dataclass
class Listener:
    """One ``blockhost listen`` subprocess and its files."""

    process: subprocess.Popen[bytes]
    db_path: Path
    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            tail = " | ".join(self.log_text().strip().splitlines()[-3:])
            raise LatencyError(f"the listener exited with code {self.process.returncode}; "
                               f"last log lines: {tail}")

    def stop(self) -> int:
        """SIGTERM, as systemd would; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@dataclass
class Rig:
    """anvil (on-demand blocks) + emitter + PVE simulator + keys: what a listener needs."""

    workdir: Path
    anvil: Anvil
    sim: Any
    rpc: JsonRpc
    next_id: int = 1
    listeners: list[Listener] = field(default_factory=list)

    def head(self) -> int:
        return int(self.rpc.call("eth_blockNumber"), 16)

    def write_config(self, name: str, *, ws: bool | str, poll_interval: float,
                     metrics: bool = False) -> Path:
        """``ws``: True = anvil's websocket, a string = that ws URL, False = poll only."""
        chain: dict[str, Any] = {
            "rpc_urls": [self.anvil.url], "chain_id": CHAIN_ID,
            "subscription_contract": EMITTER_ADDRESS, "start_block": self.head(),
            "confirmations": 0, "poll_interval": poll_interval,
        }
        if ws:
            chain["ws_url"] = ws if isinstance(ws, str) else self.anvil.ws_url
        document = {
            "chain": chain,
            "server_key_file": str(self.workdir / "server.key"),
            "proxmox": {"api_url": self.sim.url, "token_id": self.sim.token_id,
                        "token_secret_file": str(self.workdir / "pve-token"),
                        "verify_ssl": str(self.sim.ca_path), "template_vmid": 9001,
                        "pool": "blockhost", "snippets_dir": None},
            "db": {"path": str(self.workdir / name / "blockhost.db")},
        }
        if metrics:
            document["metrics"] = {"listen": "127.0.0.1:0"}
        (self.workdir / name).mkdir(parents=True, exist_ok=False)
        path = self.workdir / name / "blockhost.yaml"
        path.write_text(yaml.safe_dump(document))
        return path

    def start_listener(self, name: str, *, ws: bool | str, poll_interval: float,
                       metrics: bool = False, timeout: float = 60.0) -> Listener:
        """Start the daemon and wait until it has scanned to the head (and, with
        ``ws=True``, holds a newHeads subscription), so every later block is new to an idle
        loop."""
        config = self.write_config(name, ws=ws, poll_interval=poll_interval, metrics=metrics)
        log_path = config.parent / "listener.log"
        with open(log_path, "ab") as handle:
            process = subprocess.Popen(
                [sys.executable, "-m", "listener.cli", "--config", str(config), "listen"],
                stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        listener = Listener(process, config.parent / "blockhost.db", log_path)
        self.listeners.append(listener)
        head = self.head()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            listener.check_alive()
            if (cursor_of(listener.db_path) or -1) >= head and (
                    ws is not True or "ws.subscribed" in listener.log_text()):
                return listener
            time.sleep(0.05)
        raise LatencyError(f"the listener did not catch up within {timeout:.0f}s; see "
                           f"{log_path}")

    def mine_event(self) -> tuple[int, float]:
        """Put one SubscriptionCreated in a new block; (subscription id, perf_counter at the
        moment the block was asked for)."""
        sub_id = self.next_id
        self.next_id += 1
        data = abi_encode(["uint256", "uint256"], [sub_id, 1])
        self.rpc.call("eth_sendTransaction", {"from": SENDER, "to": EMITTER_ADDRESS,
                                              "data": "0x" + data.hex(),
                                              "gas": hex(GAS_PER_CALL + GAS_PER_LOG)})
        started = time.perf_counter()
        self.rpc.call("evm_mine")
        return sub_id, started


def cursor_of(db_path: Path) -> int | None:
    """The listener's cursor, read without writing (None until the schema exists)."""
    if not db_path.exists():
        return None
    try:
        with _read_only(db_path) as conn:
            row = conn.execute("SELECT cursor FROM chain_state WHERE id = 1").fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row else None


@contextmanager
def _read_only(db_path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
    try:
        yield conn
    finally:
        conn.close()


def wait_journaled(listener: Listener, sub_id: int, *, timeout: float = 30.0) -> float:
    """Poll the events table every ~2 ms; perf_counter when the row is first visible."""
    deadline = time.monotonic() + timeout
    with _read_only(listener.db_path) as conn:
        while True:
            row = conn.execute("SELECT 1 FROM events WHERE subscription_id = ? "
                               "AND name = 'SubscriptionCreated' LIMIT 1", (sub_id,)).fetchone()
            if row:
                return time.perf_counter()
            if time.monotonic() > deadline:
                listener.check_alive()
                raise LatencyError(f"subscription {sub_id} was not journaled within "
                                   f"{timeout:.0f}s; see {listener.log_path}")
            time.sleep(DB_POLL_SECONDS)


@contextmanager
def rig(workdir: Path) -> Iterator[Rig]:
    """Start everything a listener needs; stop it all (listeners first) on exit."""
    from provisioner.pvesim.launcher import start_pvesim

    workdir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        anvil = start_anvil(workdir / "anvil")
        stack.callback(anvil.stop)
        sim = start_pvesim(workdir / "pvesim", nodes=("pve1",), template_vmid=9001)
        stack.callback(sim.stop)
        write_secret_file(workdir / "pve-token", sim.token_secret)
        generate_key_file(workdir / "server.key")
        rpc = JsonRpc(anvil.url)
        rpc.call("anvil_setCode", EMITTER_ADDRESS, "0x" + emitter_runtime().hex())
        rpc.call("evm_setAutomine", False)
        rpc.call("evm_setNextBlockTimestamp", hex(CHAIN_CLOCK))
        rpc.call("evm_mine")
        the_rig = Rig(workdir, anvil, sim, rpc)

        def stop_listeners() -> None:
            for listener in the_rig.listeners:
                listener.stop()

        stack.callback(stop_listeners)
        yield the_rig


@dataclass
class ModeResult:
    mode: str
    latencies_ms: list[float]

    def summary(self) -> dict[str, Any]:
        values = sorted(self.latencies_ms)
        return {"mode": self.mode, "samples": len(values),
                "p50_ms": round(percentile(values, 50), 1),
                "p95_ms": round(percentile(values, 95), 1),
                "max_ms": round(values[-1], 1), "mean_ms": round(statistics.fmean(values), 1)}


def percentile(sorted_values: list[float], pct: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        raise ValueError("no samples")
    rank = (len(sorted_values) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def measure(the_rig: Rig, mode: str, *, samples: int, poll_interval: float,
            rng: random.Random, say: Callable[[str], None]) -> ModeResult:
    listener = the_rig.start_listener(mode, ws=mode == "websocket", poll_interval=poll_interval)
    say(f"{mode}: listener ready (pid {listener.process.pid}), {samples} samples")
    latencies = []
    for _ in range(samples):
        time.sleep(rng.uniform(0, poll_interval))
        sub_id, started = the_rig.mine_event()
        seen = wait_journaled(listener, sub_id)
        latencies.append((seen - started) * 1000)
    listener.check_alive()
    code = listener.stop()
    if code != 0:
        raise LatencyError(f"the {mode} listener exited with code {code} on SIGTERM; see "
                           f"{listener.log_path}")
    return ModeResult(mode, latencies)


def run(*, samples: int, poll_interval: float, modes: tuple[str, ...], workdir: Path,
        seed: int, say: Callable[[str], None]) -> list[ModeResult]:
    rng = random.Random(seed)
    with rig(workdir) as the_rig:
        say(f"anvil at {the_rig.anvil.url} (blocks on demand), PVE simulator at {the_rig.sim.url}")
        return [measure(the_rig, mode, samples=samples, poll_interval=poll_interval, rng=rng,
                        say=say) for mode in modes]


def render(results: list[ModeResult], poll_interval: float, console: Console) -> None:
    table = Table(title=f"head latency: block mined -> event journaled "
                        f"(confirmations 0, poll_interval {poll_interval}s)")
    for column in ("mode", "samples", "p50 ms", "p95 ms", "max ms", "mean ms"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    for result in results:
        s = result.summary()
        table.add_row(s["mode"], str(s["samples"]), f"{s['p50_ms']:.1f}", f"{s['p95_ms']:.1f}",
                      f"{s['max_ms']:.1f}", f"{s['mean_ms']:.1f}")
    console.print(table)


def environment() -> dict[str, Any]:
    return {"python": platform.python_version(), "web3": version("web3"),
            "websockets": version("websockets"), "cpus": os.cpu_count()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.latency",
        description="Block mined -> event journaled latency of the real listener daemon, "
                    "polling only vs websocket newHeads, in the same run.")
    parser.add_argument("--samples", type=positive_int, default=30,
                        help="events (one per block) per mode (default 30)")
    parser.add_argument("--poll-interval", type=positive_float, default=0.5,
                        help="chain.poll_interval of both listeners, seconds (default 0.5)")
    add_subset_option(parser, "--modes", MODES)
    parser.add_argument("--seed", type=int, default=7, help="seed of the random pauses")
    add_output_options(
        parser, workdir_help="where logs and databases go (default: a temp dir, removed)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    modes = tuple(parse_subset(parser, "--modes", args.modes, MODES))
    console = report_console(args.json, width=100)
    try:
        with ExitStack() as stack:
            workdir = args.workdir or Path(stack.enter_context(
                tempfile.TemporaryDirectory(prefix="bench-latency-")))
            results = run(samples=args.samples, poll_interval=args.poll_interval, modes=modes,
                          workdir=workdir, seed=args.seed,
                          say=lambda message: console.log(message))
    except (LatencyError, UserError, RuntimeError, OSError) as exc:
        console.print(f"latency bench failed: {exc}", style="red", markup=False)
        return 1
    render(results, args.poll_interval, console)
    if args.json:
        print_json({"command": command_line("python -m bench.latency", argv),
                    "poll_interval": args.poll_interval, "confirmations": 0,
                    "environment": environment(),
                    "modes": [r.summary() for r in results]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
