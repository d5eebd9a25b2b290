"""Waiting is cheap: RPC calls and database rows per minute of the real daemon at rest.

``python -m bench.idle [--seconds 60] [--block-time 2] [--json]`` starts anvil, the PVE
simulator and ``blockhost listen`` (a subprocess) with its RPC behind the counting proxy of
``listener/devkit/fault_proxy.py`` (no faults), a block mined every ``--block-time`` seconds,
and measures two phases of ``--seconds`` each in the same run:

- ``idle``: no subscription; what following the chain costs on its own (the baseline);
- ``waiting``: one paid subscription whose mint cannot be sent because the signer has no ETH
  (the NFT contract's owner is an unfunded key): the daemon waits on the signer.

For each phase: JSON-RPC calls per minute (by method) and rows added per minute (the ``steps``
journal and all tables), and the ratio waiting / idle. Before issue 13 a waiting subscription
was re-dispatched every loop, wrote a ``steps`` row each time and polled for receipts every
0.2 s; now its passes back off to once a minute and repeat no row.

Exit codes: 0 done, 1 a part failed to start or the subscription never reached the signer
wait, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from eth_account import Account

from bench.cli_args import add_output_options, positive_float, print_json, report_console
from listener.chain.contracts import load_abi, send_transaction
from listener.devkit.devenv import DevEnv, start_dev_env, write_secret_file
from listener.devkit.fault_proxy import RpcProxy
from listener.userkit.subscriber import subscribe


@dataclass(frozen=True)
class Sample:
    """Counters at one instant."""

    at: float
    calls: Counter[str]
    rows: dict[str, int]


@dataclass(frozen=True)
class Phase:
    name: str
    seconds: float
    calls_per_minute: dict[str, float]
    rows_per_minute: dict[str, float]

    @property
    def total_calls(self) -> float:
        return sum(self.calls_per_minute.values())

    @property
    def total_rows(self) -> float:
        return sum(self.rows_per_minute.values())


def table_rows(db: Path) -> dict[str, int]:
    """Row count of every table of the listener's database (read-only)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        names = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        return {name: int(conn.execute(f'SELECT COUNT(*) FROM "{name}"').fetchone()[0])  # noqa: S608 - names from sqlite_master
                for name in names}
    finally:
        conn.close()


def sample(proxy: RpcProxy, db: Path) -> Sample:
    return Sample(time.monotonic(), Counter(proxy.methods), table_rows(db))


def phase(name: str, before: Sample, after: Sample) -> Phase:
    minutes = (after.at - before.at) / 60
    calls = {m: (after.calls[m] - before.calls[m]) / minutes for m in after.calls
             if after.calls[m] != before.calls[m]}
    rows = {t: (after.rows.get(t, 0) - before.rows.get(t, 0)) / minutes for t in after.rows
            if after.rows.get(t, 0) != before.rows.get(t, 0)}
    return Phase(name, after.at - before.at, calls, rows)


class Miner:
    """A block every ``interval`` seconds, as a live chain makes them."""

    def __init__(self, env: DevEnv, interval: float) -> None:
        self._env, self._interval = env, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="miner", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._env.mine()

    def __enter__(self) -> Miner:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def unfunded_signer(env: DevEnv) -> Path:
    """Hand the NFT contract to a fresh key with no ETH; returns its key file."""
    signer = Account.create()
    key_file = env.workdir / "unfunded.key"
    write_secret_file(key_file, bytes(signer.key).hex())
    nft = env.w3.eth.contract(address=env.deployment["nft"], abi=load_abi("AccessCredentialNFT"))
    send_transaction(env.w3, env.user(0), nft.functions.transferOwnership(signer.address))
    return key_file


def point_listener_at(env: DevEnv, proxy_url: str, signer_key: Path) -> None:
    config = yaml.safe_load(env.config_path.read_text())
    config["chain"]["rpc_urls"] = [proxy_url]
    config["signer"]["private_key_file"] = str(signer_key)
    env.config_path.write_text(yaml.safe_dump(config))


def waiting_on_signer(env: DevEnv) -> bool:
    """The signer alert is up and the step journal's last line is the wait."""
    last = env.db_rows("SELECT detail FROM steps ORDER BY id DESC LIMIT 1")
    return bool(env.status()["signer_alerts"]) and bool(last) and \
        str(last[0][0]).startswith("waiting: ")


def measure(workdir: Path, *, seconds: float, block_time: float) -> list[Phase]:
    env = start_dev_env(workdir, confirmations=2, grace_days=1, clone_seconds=0.2)
    try:
        with RpcProxy(env.anvil.url) as proxy:
            point_listener_at(env, proxy.url, unfunded_signer(env))
            listener = env.start_listener()
            with Miner(env, block_time):
                env.wait_for("the listener to follow the chain",
                             lambda: env.db_path.exists() and
                             env.status()["chain"]["cursor"] is not None,
                             timeout=60, listener=listener)
                start = sample(proxy, env.db_path)
                time.sleep(seconds)
                idle = phase("idle", start, sample(proxy, env.db_path))
                user = env.user(1)
                env.fund(user)
                subscribe(env.w3, user, subscription_contract=env.deployment["subscriptions"],
                          server_public_key=env.server_public_key, plan_id=1, days=30)
                env.wait_for("the mint to wait on the unfunded signer",
                             lambda: waiting_on_signer(env), timeout=120, listener=listener)
                start = sample(proxy, env.db_path)
                time.sleep(seconds)
                waiting = phase("waiting", start, sample(proxy, env.db_path))
            return [idle, waiting]
    finally:
        env.close()


def report(phases: list[Phase]) -> dict[str, Any]:
    idle, waiting = phases
    return {
        "phases": {p.name: {"seconds": round(p.seconds, 1),
                            "calls_per_minute": round(p.total_calls, 1),
                            "calls_by_method": {k: round(v, 1) for k, v in
                                                sorted(p.calls_per_minute.items())},
                            "rows_per_minute": round(p.total_rows, 1),
                            "rows_by_table": {k: round(v, 1) for k, v in
                                              sorted(p.rows_per_minute.items())}}
                   for p in phases},
        "ratios": {
            "calls_waiting_over_idle": round(waiting.total_calls / idle.total_calls, 2)
            if idle.total_calls else None,
            "steps_rows_per_minute_waiting": round(waiting.rows_per_minute.get("steps", 0.0), 2),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.idle", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--seconds", type=positive_float, default=60.0,
                        help="length of each phase (default 60)")
    parser.add_argument("--block-time", type=positive_float, default=2.0,
                        help="seconds between mined blocks (default 2)")
    add_output_options(parser, workdir_help="keep the chain, simulator and logs here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as scratch:
        workdir = args.workdir or Path(scratch)
        doc = report(measure(workdir, seconds=args.seconds, block_time=args.block_time))
    if args.json:
        print_json(doc)
    else:
        report_console(False, width=100).print_json(data=doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
