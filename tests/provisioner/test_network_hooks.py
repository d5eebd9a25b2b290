"""Network hooks: real child processes, argv lists, validated environment, timeouts."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from provisioner.network_hooks import (
    OUTPUT_CAP,
    HookFailed,
    VMFacts,
    hook_environment,
    run_hooks,
    validate_hook,
)
from tests.support.paths import REPO_ROOT

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


def _gone(pid: int) -> bool:
    """Dead, or a zombie waiting for whoever adopted it to reap it."""
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def _wait_gone(pid: int) -> bool:
    for _ in range(200):
        if _gone(pid):
            return True
        time.sleep(0.05)
    return False


def _in_thread(call: Callable[[], object]) -> tuple[threading.Thread, list[BaseException]]:
    """Run ``call`` on a daemon thread (a hang must not hang the test run)."""
    raised: list[BaseException] = []

    def target() -> None:
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test to assert on
            raised.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, raised


# A hook that starts a grandchild in a session of its own (out of the hook's process group),
# which keeps the hook's stdout and stderr open, then both sleep for ten minutes.
ESCAPING = ("import os, sys, time\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    os.setsid()\n"
            "    time.sleep(600)\n"
            "    os._exit(0)\n"
            "open(sys.argv[1], 'w').write(f'{os.getpid()} {pid}')\n"
            "print('started a helper', flush=True)\n"
            "time.sleep(600)\n")


def test_a_grandchild_holding_the_pipes_cannot_stretch_the_timeout(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    thread, raised = _in_thread(lambda: run_hooks(
        [[sys.executable, "-c", ESCAPING, str(pids)]], "created", FACTS, timeout=1.0))
    try:
        thread.join(60)  # not a duration check: only a step that never returns fails here
        assert not thread.is_alive(), "the step still waits for a grandchild after the kill"
        assert len(raised) == 1 and isinstance(raised[0], HookFailed)
        assert "timed out after 1s" in str(raised[0])
        assert "1 process(es) it left holding its output" in str(raised[0])
        assert raised[0].results[0].stdout == "started a helper\n"
        assert all(_wait_gone(int(pid)) for pid in pids.read_text().split())
    finally:
        for pid in pids.read_text().split() if pids.exists() else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


# Prints 128 MiB and a last line on stderr, then hangs.
FLOOD = ("import sys, time\n"
         "chunk = b'x' * (1 << 20)\n"
         "for _ in range(128):\n"
         "    sys.stdout.buffer.write(chunk)\n"
         "sys.stdout.flush()\n"
         "sys.stderr.write('no route to 2001:db8::7\\n'); sys.stderr.flush()\n"
         "time.sleep(600)\n")

MEASURE = ("import json, resource, sys\n"
           "from provisioner.network_hooks import HookFailed, VMFacts, run_hooks\n"
           "facts = VMFacts(name='blockhost-7', vmid=100007, node='pve1', bridge='vmbr0')\n"
           "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
           "try:\n"
           "    run_hooks([[sys.executable, '-c', sys.argv[1]]], 'created', facts, timeout=5)\n"
           "except HookFailed as exc:\n"
           "    result = exc.results[0]\n"
           "    print(json.dumps({'error': str(exc), 'stdout': result.stdout,\n"
           "                      'stderr': result.stderr, 'grew_kib': resource.getrusage(\n"
           "                          resource.RUSAGE_SELF).ru_maxrss - before}))\n")


def test_a_flood_of_output_is_capped_and_the_hook_still_times_out() -> None:
    done = subprocess.run([sys.executable, "-c", MEASURE, FLOOD], capture_output=True,
                          cwd=REPO_ROOT, timeout=120, check=True)
    report = json.loads(done.stdout.splitlines()[-1])  # after the log lines
    assert "timed out after 5s" in report["error"]
    assert report["grew_kib"] < 32 * 1024  # 128 MiB went through; only the tail was kept
    note, kept = report["stdout"].split("\n", 1)
    assert kept == "x" * OUTPUT_CAP
    assert note == f"[{128 * 2**20 - OUTPUT_CAP} earlier bytes dropped]"
    assert report["stderr"] == "no route to 2001:db8::7\n"
