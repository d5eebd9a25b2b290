"""One listener per database: a second `listen` exits 1 with one line naming the first, and
the lock dies with its holder (SIGKILL included), so the next start works. Operator commands
that change what the listener manages step aside while it runs."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from listener.devkit.devenv import DevEnv, sim_vm, start_dev_env
from listener.errors import UserError
from listener.ops.vm_admin import destroy_by_hand
from listener.runtime.instance_lock import InstanceLock, lock_path
from listener.userkit.subscriber import subscribe
from tests.support.paths import REPO_ROOT
from tests.support.reconcile_world import EXPIRES, World
from tests.support.systemd_notify import NotifySocket, start_listener


@pytest.fixture
def env(tmp_path: Path) -> Iterator[DevEnv]:
    dev = start_dev_env(tmp_path / "dev", clone_seconds=0.2)
    try:
        yield dev
    finally:
        dev.close()


@pytest.mark.slow
def test_a_second_listener_exits_1_and_the_lock_dies_with_its_holder(env: DevEnv,
                                                                      tmp_path: Path) -> None:
    with closing(NotifySocket()) as notify:
        first = start_listener(env.config_path, notify, tmp_path / "first.log")
        env.listeners.append(first)
        assert notify.wait_for("READY=1", first), (tmp_path / "first.log.err").read_text()

        second = start_listener(env.config_path, notify, tmp_path / "second.log")
        env.listeners.append(second)
        assert not notify.wait_for("READY=1", second), "a second listener started"
        assert second.wait(timeout=30) == 1
        lines = (tmp_path / "second.log.err").read_text().splitlines()
        assert len(lines) == 1, lines
        assert f"in use by `blockhost listen`, pid {first.pid}" in lines[0]
        assert "only one listener may run per database" in lines[0]
        assert stat.S_IMODE(lock_path(env.db_path).stat().st_mode) == 0o600

        env.kill_listener(first)  # SIGKILL: nothing runs on the way out
        third = start_listener(env.config_path, notify, tmp_path / "third.log")
        env.listeners.append(third)
        assert notify.wait_for("READY=1", third), (tmp_path / "third.log.err").read_text()


HOLD = ("import sys, time\n"
        "from pathlib import Path\n"
        "from listener.runtime.instance_lock import InstanceLock\n"
        "assert InstanceLock(Path(sys.argv[1])).try_acquire('listen') is None\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n")


def hold_as_listener(db_path: Path) -> subprocess.Popen[str]:
    """Another process holding the database's lock as a running listener does."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(db_path)], cwd=REPO_ROOT,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    return holder


def test_vm_destroy_leaves_a_subscription_vm_to_the_running_listener(tmp_path: Path,
                                                                     pvesim: Any) -> None:
    world = World(tmp_path, pvesim)
    try:
        world.paid(1)
        world.reconcile(1)
        vm = world.vm(1)
        world.store.conn.execute("UPDATE chain_state SET chain_time = ?", (EXPIRES + 10,))
        holder = hold_as_listener(world.config.db.path)
        try:
            with pytest.raises(UserError, match=f"`blockhost listen`, pid {holder.pid} "
                                                "manages and destroys itself when due"):
                destroy_by_hand(world.config, vm.name, execute=True)
            assert world.sim.vm(vm.vmid) is not None and world.vm(1) is not None
        finally:
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait()
        destroy_by_hand(world.config, vm.name, execute=True)  # no listener: it goes
        assert world.sim.vm(vm.vmid) is None and world.vm(1) is None
        lock = InstanceLock(world.config.db.path)
        assert lock.try_acquire("listen") is None  # released by the command
        lock.release()
    finally:
        world.store.close()


def gc_execute(env: DevEnv) -> tuple[int, list[tuple[int | None, str, str]]]:
    proc = subprocess.run([sys.executable, "-m", "listener.cli", "--config",
                           str(env.config_path), "gc", "--execute", "--json"],
                          capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    steps = json.loads(proc.stdout)["steps"] if proc.stdout else []
    return proc.returncode, [(s["subscription_id"], s["action"], s["result"]) for s in steps]


@pytest.mark.slow
def test_gc_leaves_the_subscriptions_to_a_running_listener(env: DevEnv) -> None:
    env.fund(env.user(1))
    sub_id = subscribe(env.w3, env.user(1), subscription_contract=env.deployment["subscriptions"],
                       server_public_key=env.server_public_key, plan_id=1,
                       days=1).subscription_id
    listener = env.start_listener()
    env.wait_for("the VM", lambda: (env.subscription(sub_id) or {}).get("state") == "active",
                 timeout=120, listener=listener)
    env.kill_listener(listener)
    vmid = (env.subscription(sub_id) or {})["vm"]["vmid"]
    env.advance_time(86_400 + 60)
    env.mine(3)  # expired, and confirmed

    holder = hold_as_listener(env.db_path)
    try:
        code, steps = gc_execute(env)
        assert code == 0 and steps == [
            (sub_id, "stop", f"skipped: left to the running `blockhost listen`, pid {holder.pid}")]
        assert (sim_vm(env.sim, vmid) or {})["status"] == "running"
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert gc_execute(env) == (0, [(sub_id, "stop", "done")])
    assert (sim_vm(env.sim, vmid) or {})["status"] == "stopped"
