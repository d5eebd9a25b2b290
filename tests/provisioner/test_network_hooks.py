"""Network hooks: real child processes, argv lists, validated environment, timeouts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from provisioner.network_hooks import (
    HookFailed,
    VMFacts,
    hook_environment,
    run_hooks,
    validate_hook,
)

FACTS = VMFacts(name="blockhost-7", vmid=100007, node="pve1", bridge="vmbr0",
                ipv4="192.168.122.207/24", ipv6="2001:db8::7/128", subscription_id=7)

DUMP = ("import json, os, sys; json.dump({k: v for k, v in os.environ.items()}, "
        "open(sys.argv[1], 'w')); json.dump(sys.argv[2:], open(sys.argv[1] + '.argv', 'w'))")


def test_hook_gets_the_facts_in_its_environment_and_argv_verbatim(tmp_path: Path) -> None:
    out = tmp_path / "env.json"
    hostile = "$(touch /tmp/pwned); rm -rf / `id` ' \" ;|&"
    results = run_hooks([[sys.executable, "-c", DUMP, str(out), hostile, "*"]], "created", FACTS,
                        base_env={"PATH": "/usr/bin:/bin", "SECRET_TOKEN": "x"})
    assert [r.returncode for r in results] == [0]
    env = json.loads(out.read_text())
    assert {k: v for k, v in env.items() if k.startswith("BLOCKHOST_")} == {
        "BLOCKHOST_EVENT": "created", "BLOCKHOST_VM_NAME": "blockhost-7",
        "BLOCKHOST_VMID": "100007", "BLOCKHOST_NODE": "pve1", "BLOCKHOST_BRIDGE": "vmbr0",
        "BLOCKHOST_IPV4": "192.168.122.207", "BLOCKHOST_IPV6": "2001:db8::7",
        "BLOCKHOST_SUBSCRIPTION_ID": "7"}
    assert "SECRET_TOKEN" not in env  # only a minimal base environment is passed on
    assert json.loads(Path(str(out) + ".argv").read_text()) == [hostile, "*"]  # no shell


def test_all_hooks_run_and_failures_are_reported_together(tmp_path: Path) -> None:
    marker = tmp_path / "second-ran"
    hooks = [[sys.executable, "-c", "import sys; sys.stderr.write('no route'); sys.exit(3)"],
             [sys.executable, "-c", f"open({str(marker)!r}, 'w').write('x')"],
             ["/nonexistent/hook"]]
    with pytest.raises(HookFailed) as info:
        run_hooks(hooks, "destroyed", FACTS)
    assert marker.exists()
    text = str(info.value)
    assert "2 destroyed hook(s) failed" in text and "exit 3" in text
    assert "/nonexistent/hook: could not start" in text


def test_a_hanging_hook_is_killed_with_its_children(tmp_path: Path) -> None:
    child_pid = tmp_path / "child.pid"
    script = ("import subprocess, sys, time; "
              "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
              f"open({str(child_pid)!r}, 'w').write(str(p.pid)); time.sleep(60)")
    with pytest.raises(HookFailed, match="timed out"):
        run_hooks([[sys.executable, "-c", script]], "created", FACTS, timeout=1.0)
    pid = int(child_pid.read_text())
    import os
    import time
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        # a zombie reparented to init disappears once reaped
        time.sleep(0.05)
    else:
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().split()[2] == "Z"


def test_no_hooks_is_a_no_op() -> None:
    assert run_hooks([], "created", FACTS) == []


@pytest.mark.parametrize("hook", ["/bin/echo hi", [], ["relative/prog"], ["/bin/echo", 5],
                                  ["/bin/echo", "a\x00b"]])
def test_bad_hooks_are_rejected(hook: object) -> None:
    with pytest.raises(ValueError):
        validate_hook(hook)


@pytest.mark.parametrize("facts", [
    VMFacts(name="bad name; rm", vmid=100, node="pve1", bridge="vmbr0"),
    VMFacts(name="ok", vmid=100, node="pve1", bridge="vmbr0\nX=1"),
    VMFacts(name="ok", vmid=5, node="pve1", bridge="vmbr0"),
    VMFacts(name="ok", vmid=100, node="pve1", bridge="vmbr0", ipv4="2001:db8::1"),
    VMFacts(name="ok", vmid=100, node="pve1", bridge="vmbr0", ipv6="10.0.0.1"),
    VMFacts(name="ok", vmid=100, node="pve1", bridge="vmbr0", ipv4="not-an-ip"),
    VMFacts(name="ok", vmid=100, node="pve1", bridge="vmbr0", subscription_id=-1),
])
def test_facts_are_validated_before_anything_runs(facts: VMFacts) -> None:
    with pytest.raises(ValueError):
        hook_environment("created", facts)


def test_absent_addresses_are_empty_and_unknown_events_rejected() -> None:
    env = hook_environment("destroyed", VMFacts(name="vm", vmid=100, node="n", bridge="b"), {})
    assert (env["BLOCKHOST_IPV4"], env["BLOCKHOST_IPV6"], env["BLOCKHOST_SUBSCRIPTION_ID"]) \
        == ("", "", "")
    assert env["PATH"]
    with pytest.raises(ValueError):
        hook_environment("rebooted", FACTS)
