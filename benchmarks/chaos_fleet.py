"""The pieces `python -m benchmarks.chaos` drives: one training run as real processes (`Fleet`),
a second network "host" that can be cut off (`Partition`), a small disk that can be filled
(`SmallDisk`), and a sampler that logs every process's memory and the learner's metrics.

Root is needed for the partition (network namespace + veth) and the disk (a tmpfs mount).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from testkit.marks import MarkKeeper
from testkit.processes import BIN

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


class Partition:
    """A network namespace joined to this one by a veth pair: the second host's actor runs in it
    and reaches the learner at `learner_ip`; `cut()` downs its end of the link, `heal()` ups it."""

    def __init__(self, tag: int):
        self.ns, self.dev, self.peer = f"rf-chaos{tag}", f"rfc{tag}", f"rfcp{tag}"
        net = f"10.{180 + tag % 20}.{tag // 20 % 250}"
        self.learner_ip, self.host_ip = f"{net}.1", f"{net}.2"

    def __enter__(self) -> Partition:
        if os.geteuid() != 0:
            raise PermissionError("a network partition needs root (network namespaces)")
        try:
            _ip("netns", "add", self.ns)
            _ip("link", "add", self.dev, "type", "veth", "peer", "name", self.peer)
            _ip("link", "set", self.peer, "netns", self.ns)
            _ip("addr", "add", f"{self.learner_ip}/24", "dev", self.dev)
            _ip("link", "set", self.dev, "up")
            _ip("-n", self.ns, "addr", "add", f"{self.host_ip}/24", "dev", self.peer)
            _ip("-n", self.ns, "link", "set", self.peer, "up")
            _ip("-n", self.ns, "link", "set", "lo", "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        _ip("netns", "del", self.ns, check=False)  # takes its end of the pair with it
        _ip("link", "del", self.dev, check=False)

    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.ns]

    def cut(self) -> None:
        _ip("-n", self.ns, "link", "set", self.peer, "down")

    def heal(self) -> None:
        _ip("-n", self.ns, "link", "set", self.peer, "up")


class SmallDisk:
    """A tmpfs of `mb` MiB mounted on `path`; `fill()` takes all its free space, `free()` gives it back."""

    def __init__(self, path: Path, mb: int):
        self.path, self.mb = path, mb
        self.filler = path / "filler.bin"  # not a checkpoint name: rotation and loading ignore it

    def __enter__(self) -> SmallDisk:
        if os.geteuid() != 0:
            raise PermissionError("a small disk needs root (a tmpfs mount)")
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.mb}m", "tmpfs", str(self.path)],
                       check=True, capture_output=True, timeout=30)
        return self

    def __exit__(self, *exc) -> None:
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True, timeout=30)

    def fill(self) -> int:
        """Write zeros until ENOSPC; the bytes written."""
        block, written = b"\0" * (1 << 20), 0
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while True:
                try:
                    n = os.write(fd, block if written % (1 << 20) == 0 else block[:4096])
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    if len(block) > 4096:
                        block = block[:4096]  # the last pages
                        continue
                    return written
                written += n
        finally:
            os.close(fd)

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


@dataclass
class Fleet:
    """One training run: a learner, an actor host of `emulators`, `actors` one-process actors and
    one more one-process actor on a second host (in `partition`'s namespace when given)."""

    name: str
    out: Path
    learner_flags: list[str]
    port: int
    emulators: int
    actors: int
    partition: Partition | None = None
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    learner_starts: int = 0
    second_host: bool = True  # one more one-process actor, the "remote" one
    killing: bool = False  # the learner is being killed on purpose: the supervisor leaves it

    @property
    def run_dir(self) -> Path:
        return self.out / "run"

    @property
    def expected_actors(self) -> int:
        return self.emulators + self.actors + int(self.second_host)

    def _address(self) -> str:
        return f"tcp://{self.partition.learner_ip if self.partition else '127.0.0.1'}:{self.port}"

    def _start(self, role: str, args: list[str]) -> subprocess.Popen:
        with open(self.out / f"{role}.log", "ab") as fh:
            p = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, env=ENV)
        self.procs[role] = p
        return p

    def start_learner(self, resume: bool = False, timeout: float = 300) -> float:
        """Start (or with `resume`, restart) the learner; seconds until it was ready."""
        return self.wait_ready(*self.launch_learner(resume), timeout)

    def launch_learner(self, resume: bool = False) -> tuple[int, float]:
        """Start the learner without waiting: (its log's offset, the start time) for `wait_ready`."""
        log = self.out / "learner.log"
        since = log.stat().st_size if log.exists() else 0
        bind = ["--bind", "0.0.0.0"] if self.partition else []  # the second host's link and loopback
        self._start("learner", [str(BIN / "learner"), *self.learner_flags, *bind, "--port", str(self.port),
                                "--run-dir", str(self.run_dir), *(["--resume"] if resume else [])])
        self.learner_starts += 1
        return since, time.monotonic()

    def wait_ready(self, since: int, t0: float, timeout: float = 300) -> float:
        log, p = self.out / "learner.log", self.procs["learner"]
        while b"learner ready" not in log.read_bytes()[since:]:
            if p.poll() is not None or time.monotonic() - t0 > timeout:
                tail = log.read_bytes()[since:].decode(errors="replace").strip().splitlines()[-3:]
                raise RuntimeError(f"{self.name}: the learner did not start in {timeout:.0f} s: {' | '.join(tail)}")
            time.sleep(0.2)
        return time.monotonic() - t0

    def learner_log_since(self, offset: int) -> str:
        return (self.out / "learner.log").read_bytes()[offset:].decode(errors="replace")

    def start_actor(self, role: str) -> subprocess.Popen:
        actor = [str(BIN / "actor"), "--learner", self._address()]
        if role == "host":
            return self._start(role, [*actor, "--emulators", str(self.emulators), "--inference-device", "cpu"])
        if role == "remote" and self.partition:
            return self._start(role, [*self.partition.prefix(), *actor])
        return self._start(role, actor)

    def actor_roles(self) -> list[str]:
        return ["host", *(f"actor{i}" for i in range(self.actors)), *(["remote"] if self.second_host else [])]

    def start_actors(self) -> None:
        for role in self.actor_roles():
            self.start_actor(role)

    def restart_dead(self) -> list[str]:
        """A supervisor's job (launch.sh, Ray): actors that exited are started again; their roles."""
        dead = [r for r in self.actor_roles() if self.procs[r].poll() is not None]
        for role in dead:
            self.procs[role].wait()
            self.start_actor(role)
        return dead

    def emulator_pids(self) -> list[int]:
        try:
            host = psutil.Process(self.procs["host"].pid)
            return sorted(c.pid for c in host.children(recursive=True))
        except psutil.Error:
            return []

    def rss_by_role(self) -> dict[str, float]:
        """MiB of every process: learner, host, each one-process actor, remote, and `emulator`
        (the largest of the host's children, which are its emulators)."""
        out: dict[str, float] = {}
        for role, p in self.procs.items():
            try:
                out[role] = psutil.Process(p.pid).memory_info().rss / 2**20
            except psutil.Error:
                continue
        children = []
        for pid in self.emulator_pids():
            try:
                children.append(psutil.Process(pid).memory_info().rss / 2**20)
            except psutil.Error:
                continue
        if children:
            out["emulator"] = max(children)
            out["host_total"] = out.get("host", 0.0) + sum(children)
        out["total"] = sum(v for k, v in out.items() if k not in ("emulator", "total"))
        return out

    def stop(self) -> int | None:
        """SIGTERM everything (the learner last, so it writes its final checkpoint); its exit code."""
        order = [r for r in self.procs if r != "learner"] + (["learner"] if "learner" in self.procs else [])
        for role in order:
            p = self.procs[role]
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGCONT)  # a stopped process cannot take SIGTERM
                except ProcessLookupError:
                    pass
                p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        return self.procs["learner"].returncode if "learner" in self.procs else None


def last_row(run_dir: Path) -> dict:
    """The last complete line of metrics.jsonl (read from its end: the file grows for hours)."""
    path = run_dir / "metrics.jsonl"
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 8192))
            lines = fh.read().split(b"\n")
    except OSError:
        return {}
    for line in reversed(lines[1:] if len(lines) > 1 else lines):
        try:
            return json.loads(line)
        except ValueError:  # the line being written, or a cut first line
            continue
    return {}


class Sampler:
    """Every `every` s: each fleet's last metrics row and every process's RSS, with the time since
    `t0`. Samples are kept in memory (a few per second for hours is small) and appended to CSVs."""

    def __init__(self, fleets: list[Fleet], t0: float, every: float = 1.0, marks: MarkKeeper | None = None):
        self.fleets, self.t0, self.every = fleets, t0, every
        self.marks = marks  # policy snapshots at equal frames (testkit/marks.py)
        self.metrics: dict[str, list[tuple[float, dict]]] = {f.name: [] for f in fleets}
        self.rss: dict[str, list[tuple[float, dict[str, float]]]] = {f.name: [] for f in fleets}
        self.lock = threading.Lock()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(self.every):
            t = time.monotonic() - self.t0
            for f in self.fleets:
                try:
                    row = last_row(f.run_dir)
                    rss = f.rss_by_role() if n % 5 == 0 else None  # memory every 5 samples: it moves slowly
                    if self.marks is not None and row:
                        self.marks.check(f.name, f.run_dir, int(row["frames"]))
                except Exception as exc:  # a sample lost is no reason to stop sampling
                    self.errors.append(f"{t:.0f}s {f.name}: {exc!r}")
                    continue
                with self.lock:
                    if row:
                        self.metrics[f.name].append((t, row))
                    if rss is not None:
                        self.rss[f.name].append((t, rss))
            n += 1

    def rows_since(self, name: str, t: float) -> list[tuple[float, dict]]:
        with self.lock:
            return [(ts, row) for ts, row in self.metrics[name] if ts >= t]

    def now(self) -> float:
        return time.monotonic() - self.t0
