"""The unit files run commands our CLI really accepts, with the hardening we document."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

import pytest

from listener.cli.parser import build_parser
from listener.runtime.liveness import longest_blocking_call
from listener.runtime.wiring import http_provider
from tests.support.paths import REPO_ROOT

UNITS = REPO_ROOT / "systemd"


def read_unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(path.read_text())
    return parser


def exec_argv(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    """ExecStart's argv as systemd expands it: the unit's Environment= lines (then
    ``environ``, as EnvironmentFile= would) fill ``${VAR}`` as one word, ``$VAR`` as words."""
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.startswith("Environment="):
            key, _, value = line.removeprefix("Environment=").partition("=")
            env[key] = value
    env.update(environ or {})
    argv: list[str] = []
    for word in shlex.split(read_unit(path)["Service"]["ExecStart"]):
        if word.startswith("${") and word.endswith("}"):
            argv.append(env[word[2:-1]])
        elif word.startswith("$"):
            argv.extend(env[word[1:]].split())
        else:
            argv.append(word)
    return argv


@pytest.mark.parametrize("name", ["blockhost-listener.service", "blockhost-gc.service",
                                  "blockhost-backup.service", "blockhost-web.service"])
def test_exec_start_is_a_valid_blockhost_command(name: str) -> None:
    unit = read_unit(UNITS / name)
    argv = exec_argv(UNITS / name)
    assert argv[0].endswith("/bin/blockhost")
    build_parser().parse_args(argv[1:])  # exits 2 (fails the test) on an unknown command
    service = unit["Service"]
    assert service["User"] == "blockhost" and service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict" and service["UMask"] == "0077"
    # (configparser keeps only the last of repeated keys: read the lines)
    assert "\nEnvironment=BLOCKHOST_CONFIG=/etc/blockhost/blockhost.yaml\n" in \
        (UNITS / name).read_text()


def test_web_unit_serves_loopback_http_unless_told_where_and_with_tls() -> None:
    unit = UNITS / "blockhost-web.service"
    plain = build_parser().parse_args(exec_argv(unit)[1:])
    assert (plain.command, plain.web_command) == ("web", "serve")
    assert plain.listen.startswith("127.0.0.1:") and plain.tls_cert is None
    tls = build_parser().parse_args(exec_argv(unit, {
        "BLOCKHOST_WEB_LISTEN": "0.0.0.0:8443",
        "BLOCKHOST_WEB_TLS": "--tls-cert /etc/blockhost/web.crt --tls-key /etc/blockhost/web.key",
    })[1:])
    assert tls.listen == "0.0.0.0:8443" and str(tls.tls_key) == "/etc/blockhost/web.key"
    service = read_unit(unit)["Service"]
    assert service["Restart"] == "on-failure" and service["CapabilityBoundingSet"] == ""


def test_listener_is_a_notify_service_with_a_watchdog() -> None:
    service = read_unit(UNITS / "blockhost-listener.service")["Service"]
    assert service["Type"] == "notify" and int(service["WatchdogSec"]) >= 30
    assert service["Restart"] == "on-failure"


def test_gc_timer_triggers_the_gc_service() -> None:
    timer = read_unit(UNITS / "blockhost-gc.timer")
    assert timer["Timer"]["OnCalendar"] and timer["Install"]["WantedBy"] == "timers.target"
    assert (UNITS / "blockhost-gc.service").exists()


def test_backup_timer_writes_dated_backups_into_the_state_directory() -> None:
    """Nightly, off until enabled, into /var/lib/blockhost/backups/, keeping the newest N."""
    timer = read_unit(UNITS / "blockhost-backup.timer")
    assert timer["Timer"]["OnCalendar"] and timer["Install"]["WantedBy"] == "timers.target"
    service = read_unit(UNITS / "blockhost-backup.service")["Service"]
    args = build_parser().parse_args(shlex.split(service["ExecStart"])[1:])
    assert args.command == "backup" and str(args.dir) == "/var/lib/blockhost/backups"
    assert args.keep >= 1 and args.out is None
    assert service["Type"] == "oneshot" and service["StateDirectory"] == "blockhost"
    assert service["PrivateNetwork"] == "yes" and service["CapabilityBoundingSet"] == ""


def test_watchdog_outlasts_the_longest_blocking_call_of_the_loop() -> None:
    """WatchdogSec covers one RPC call with all its retries, one minter web3 call, one SQLite
    busy wait and one idle slice (the arithmetic is in the unit file's comment)."""
    retry = http_provider("http://127.0.0.1:1").exception_retry_configuration
    assert retry is not None
    bound = longest_blocking_call(web3_retries=retry.retries,
                                  web3_backoff_factor=retry.backoff_factor)
    watchdog = int(read_unit(UNITS / "blockhost-listener.service")["Service"]["WatchdogSec"])
    assert watchdog > bound >= 488
