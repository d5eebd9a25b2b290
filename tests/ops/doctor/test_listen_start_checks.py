"""`blockhost listen` runs doctor's fatal subset first: a wrong chain id, an address without
code or a refused token stops the start with the ✗ lines; an RPC or PVE that does not answer
only logs a warning and the daemon starts (it waits out outages)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from listener.devkit.devenv import DevEnv, write_secret_file
from tests.ops.doctor.conftest import config_with


def listen(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "listener.cli", "--config", str(config),
                           "listen"], capture_output=True, text=True, timeout=120, check=False)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def own_db(tmp_path: Path) -> dict[str, Any]:
    return {"db": {"path": str(tmp_path / "blockhost.db")}}


@pytest.mark.parametrize(("changes", "line"), [
    ({"chain": {"chain_id": 5}}, "✗ RPC http://127.0.0.1:"),
    ({"chain": {"nft_contract": "0x" + "34" * 20}}, "✗ NFT contract: no contract code at"),
])
def test_wrong_chain_settings_stop_the_start(env: DevEnv, tmp_path: Path,
                                             changes: dict[str, Any], line: str) -> None:
    result = listen(config_with(env, tmp_path, {**changes, **own_db(tmp_path)}))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("blockhost: error: refusing to start: 1 start check(s) failed")
    assert lines[1].startswith(line) and len(lines) == 2
    assert not (tmp_path / "blockhost.db").exists()  # nothing was started


def test_refused_token_stops_the_start(env: DevEnv, tmp_path: Path) -> None:
    write_secret_file(tmp_path / "pve-token", "wrong-secret")
    result = listen(config_with(env, tmp_path, {
        "proxmox": {"token_secret_file": str(tmp_path / "pve-token")}, **own_db(tmp_path)}))
    assert result.returncode == 1
    assert "✗ PVE API: 401" in result.stderr and "wrong-secret" not in result.stderr
    assert "Traceback" not in result.stderr


def _wait_for(path: Path, text: str, process: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        log = path.read_text(errors="replace")
        if text in log or process.poll() is not None:
            return log
        time.sleep(0.2)
    return path.read_text(errors="replace")


def test_outages_at_start_are_not_fatal(env: DevEnv, tmp_path: Path) -> None:
    config = config_with(env, tmp_path, {
        "chain": {"rpc_urls": [f"http://127.0.0.1:{closed_port()}"]},
        "proxmox": {"api_url": f"https://127.0.0.1:{closed_port()}"}, **own_db(tmp_path)})
    out = tmp_path / "listen.out"
    with open(out, "wb") as handle:
        process = subprocess.Popen([sys.executable, "-m", "listener.cli", "--config",
                                    str(config), "listen"], stdout=handle,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        log = _wait_for(out, "start_check.pve_unreachable", process)
        assert "start_check.rpc_unreachable" in log and "start_check.pve_unreachable" in log
        time.sleep(1)
        assert process.poll() is None, log  # still running: waiting for the chain
    finally:
        process.terminate()
        process.wait(timeout=30)
