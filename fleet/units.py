"""What Ray places and restarts: one unit per Ray actor, and the learner when it runs on Ray.

A unit is an actor host (`python -m actor --emulators K`: its inference process and K emulator
processes, each emulator an actor id of its own to the learner), or with --emulators-per-host 0
a lone one-process actor (`python -m actor`). `unit_argv` is the one place that says which
program a unit runs. A unit's program is the unit's child: when it dies the Ray actor
exits on purpose (os._exit), so that Ray restarts it (max_restarts=-1) and counts the restart;
when Ray kills the actor or its node goes, the child gets SIGTERM from the kernel.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from fleet import spec as fleet_spec
from fleet.autoscale import last_metrics_row
from fleet.child import Child
from fleet.learner_proc import LearnerProcess
from fleet.spec import FleetError, FleetSpec

# the ids a unit's program speaks for, from its log lines (actor/client.py, link.py, host.py)
EMULATOR = re.compile(r"emulator (\d+) joined \S+ as actor (\d+)")
JOINED = re.compile(r"joined \S+ as actor (\d+)")
REJOINING = re.compile(r"joining it again as actors? ((?:\d+, )*\d+)")
REJOINED = re.compile(r"rejoined as actor (\d+)")
YOUNG_S = 10.0  # a program that dies younger than this: wait before Ray restarts it
SPEC_POLL_S = 5.0


def unit_argv(spec: FleetSpec, emulators: int) -> list[str]:
    """The program one unit runs, from the driver's venv python."""
    if spec.unit == "host":
        return [spec.python, "-m", "actor", "--emulators", str(emulators), "--learner", spec.learner]
    return [spec.python, "-m", "actor", "--learner", spec.learner]


class ActorIds:
    """The learner's actor ids a unit's program acts for now, read from its log lines: one for a
    one-process actor, one per emulator for a host (an emulator started again is a new actor)."""

    def __init__(self) -> None:
        self.by_slot: dict[int, int] = {}
        self.rejoining: list[int] = []  # slots whose "rejoined as actor N" lines come next, in order

    def feed(self, line: str) -> None:
        if m := EMULATOR.search(line):
            self.by_slot[int(m.group(1))] = int(m.group(2))
        elif m := JOINED.search(line):
            self.by_slot = {0: int(m.group(1))}
        elif m := REJOINING.search(line):
            slot_of = {actor: slot for slot, actor in self.by_slot.items()}
            self.rejoining = [slot_of.get(int(i), 0) for i in m.group(1).split(", ")]
        elif m := REJOINED.search(line):
            self.by_slot[self.rejoining.pop(0) if self.rejoining else 0] = int(m.group(1))

    def ids(self) -> list[int]:
        return [self.by_slot[k] for k in sorted(self.by_slot)]


def children(pid: int) -> list[int]:
    """The direct children of `pid` (a host's emulator processes), from /proc."""
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                out += [int(p) for p in fh.read().split()]
    except OSError:  # gone, or not Linux
        pass
    return sorted(set(out))


def curve_args(paths: dict[str, str]) -> list[str]:
    return ["--curve-secret", paths["secret"], "--curve-server-key", paths["server"]] if paths else []


def _exit_for_restart(what: str, pid: int, rc: int | None, lived: float) -> None:
    print(f"fleet: {what} (pid {pid}) exited with code {rc} after {lived:.0f} s; this Ray actor exits "
          "so that Ray restarts it", file=sys.stderr, flush=True)
    if lived < YOUNG_S:
        time.sleep(2.0)  # a program that fails at once must not make Ray restart it in a tight loop
    os._exit(1)


class ActorUnit:
    """A Ray actor that runs one unit program and lives exactly as long as it does."""

    def __init__(self, fleet: str, index: int, emulators: int = 1, keys: tuple[str, str] | None = None):
        import ray

        from common.transport import key_file_text

        self.spec = fleet_spec.require(fleet)
        if not self.spec.learner:
            raise FleetError(f"fleet {fleet!r} has no learner address yet")
        self.index, self.emulators = index, emulators
        self.started_at = time.time()
        self.restarted = ray.get_runtime_context().was_current_actor_reconstructed
        self.actor_ids = ActorIds()
        self.stopping = False
        secrets = None
        if self.spec.curve_server_key:
            if keys is None:
                raise FleetError("the learner requires CURVE but this unit got no key pair")
            secrets = {"secret": key_file_text(keys[0], keys[1]),
                       "server": key_file_text(self.spec.curve_server_key)}
        # a host's CURVE key pair serves all its emulators (one client, one key, many actor ids)
        self.child = Child(unit_argv(self.spec, emulators), on_line=self.actor_ids.feed, secrets=secrets,
                           env=self.spec.env, secret_args=curve_args)
        threading.Thread(target=self._watch, name="unit-watch", daemon=True).start()

    def _watch(self) -> None:
        """Exit (for Ray to restart us) when the program dies or the learner moved."""
        while True:
            try:
                rc = self.child.wait(SPEC_POLL_S)
            except subprocess.TimeoutExpired:  # still running
                rc = None
                if self._learner_moved():
                    print(f"fleet: the learner moved to {self.spec.learner}; restarting this unit",
                          file=sys.stderr, flush=True)
                    self.stopping = True
                    self.child.stop()
                    os._exit(1)
            if self.stopping:
                return
            if rc is not None:
                _exit_for_restart(self.spec.unit, self.child.pid, rc, time.time() - self.started_at)

    def _learner_moved(self) -> bool:
        try:
            now = fleet_spec.get(self.spec.name)
        except Exception:  # the GCS is busy or briefly away: look again later
            return False
        if now is None or not now.learner or now.learner == self.spec.learner:
            return False
        self.spec = now
        return True

    def info(self) -> dict[str, Any]:
        import ray

        return {"index": self.index, "node_ip": ray.util.get_node_ip_address(), "pid": os.getpid(),
                "child_pid": self.child.pid, "child_alive": self.child.poll() is None,
                "emulators": self.emulators,
                "emulator_pids": children(self.child.pid) if self.spec.unit == "host" else [],
                "actor_ids": self.actor_ids.ids(), "learner": self.spec.learner,
                "started_at": self.started_at, "restarted": self.restarted, "unit": self.spec.unit}

    def stop(self, timeout: float = 10.0) -> int:
        """End the program cleanly (SIGTERM; SIGKILL after `timeout` s); Ray's kill follows."""
        self.stopping = True
        return self.child.stop(timeout)


class LearnerUnit:
    """The learner as a Ray actor (--learner-on-ray). It writes its address into the fleet's spec
    each time Ray starts it, so units (re)started afterwards find it; restarted on the same node
    (or with the run directory on shared storage), it resumes from its newest checkpoint."""

    def __init__(self, fleet: str, flags: list[str], run_dir: str, cwd: str | None,
                 curve: dict[str, Any] | None = None):
        import ray

        spec = fleet_spec.require(fleet)
        self.fleet = fleet
        self.started_at = time.time()
        self.exit_code: int | None = None
        self.stopping = False
        self.curve_dir = self._write_keys(curve) if curve else None
        node_ip = ray.util.get_node_ip_address()
        flags = [*flags, "--run-dir", run_dir]
        if ray.get_runtime_context().was_current_actor_reconstructed and any(Path(run_dir, "checkpoints").glob("*.pt")):
            flags.append("--resume")
        self.proc = LearnerProcess(spec.python, node_ip, flags, echo=True, curve_dir=self.curve_dir,
                                   cwd=cwd if cwd and os.path.isdir(cwd) else None)
        address = self.proc.wait_ready()
        spec = fleet_spec.require(fleet)
        spec.learner = address
        fleet_spec.put(spec)
        threading.Thread(target=self._watch, name="learner-watch", daemon=True).start()

    @staticmethod
    def _write_keys(curve: dict[str, Any]) -> str:
        """The learner's key pair and the admitted actors' public keys, in a private directory."""
        from common.transport import key_file_text

        d = Path(tempfile.mkdtemp(prefix="retrofleet-curve-"))  # mode 0700
        (d / "authorized").mkdir()
        secret = d / "learner.key_secret"
        secret.touch(0o600)
        secret.write_text(key_file_text(curve["public"], curve["secret"]))
        for name, public in curve["authorized"].items():
            (d / "authorized" / f"{name}.key").write_text(key_file_text(public))
        return str(d)

    def authorize(self, name: str, public: str) -> None:
        """Admit one more actor key (the learner rereads authorized/ when it changes)."""
        from common.transport import key_file_text

        if self.curve_dir is None:
            return
        path = Path(self.curve_dir, "authorized", f"{name}.key")
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_text(key_file_text(public))
            tmp.rename(path)

    def _watch(self) -> None:
        rc = self.proc.child.wait()
        if self.stopping:
            return
        if rc == 0:  # the run ended (--total-frames, --stop-at-return): not a failure
            self.exit_code = 0
            return
        _exit_for_restart("learner", self.proc.child.pid, rc, time.time() - self.started_at)

    def status(self) -> dict[str, Any]:
        import ray

        return {"address": self.proc.address, "run_dir": str(self.proc.run_dir), "pid": self.proc.child.pid,
                "node_ip": ray.util.get_node_ip_address(), "line": self.proc.status_line,
                "exit_code": self.exit_code,
                "metrics": last_metrics_row(self.proc.run_dir) if self.proc.run_dir else None}

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM: the learner writes its final checkpoint; its key directory is removed."""
        self.stopping = True
        self.exit_code = self.proc.stop(timeout)
        if self.curve_dir:
            shutil.rmtree(self.curve_dir, ignore_errors=True)
        return self.exit_code
