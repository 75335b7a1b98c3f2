"""Learner and actor processes for tests and benchmarks: free ports on 127.0.0.1, starting
processes (and killing them), a whole pipeline run to its end, waiting for a condition."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from testkit.run_files import pipeline_result

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# CartPole-v1 for tests that need a quick pipeline, not learning: plain defaults, small batches.
CARTPOLE = ("--env", "CartPole-v1", "--preset", "none", "--batch-size", "256")


def stop_processes(procs: list[subprocess.Popen], timeout: float = 15) -> None:
    """SIGTERM every process still running, wait up to `timeout` s each, then SIGKILL."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def free_base_port() -> int:
    """A base port P with P, P+1 and P+2 free on 127.0.0.1 (for tests and benchmarks)."""
    while True:
        base = random.randint(20000, 60000)
        try:
            for off in range(3):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", base + off))
            return base
        except OSError:
            continue


def run_pipeline(flags: list[str], actors: int, run_dir: Path, timeout: float) -> dict:
    """Start a learner and `actors` actors; wait for the learner to stop by itself."""
    run_dir.mkdir(parents=True, exist_ok=True)
    port = free_base_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = open(run_dir / "learner.log", "w")
    learner = subprocess.Popen([str(BIN / "learner"), *flags, "--port", str(port), "--run-dir", str(run_dir),
                                "--quiet"], stdout=log, stderr=subprocess.STDOUT, env=env)
    procs = []
    try:
        deadline = time.monotonic() + 60
        while "learner ready" not in (run_dir / "learner.log").read_text():
            if learner.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((run_dir / "learner.log").read_text())
            time.sleep(0.1)
        for i in range(actors):
            with open(run_dir / f"actor_{i}.log", "w") as alog:
                procs.append(subprocess.Popen([str(BIN / "actor"), "--learner", f"tcp://127.0.0.1:{port}"],
                                              stdout=alog, stderr=subprocess.STDOUT, env=env))
        learner.wait(timeout)
    finally:
        stop_processes([learner, *procs])
        log.close()
    return pipeline_result(run_dir)


def wait_for(cond, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Procs:
    """Processes started by a test; all killed at teardown."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []

    def start(self, args: list[str], log: Path, **kw) -> subprocess.Popen:
        fh = open(log, "ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        p = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, cwd=self.tmp, env=env, **kw)
        fh.close()
        self.procs.append(p)
        return p

    def learner(self, *flags: str, port: int, run_dir: Path, log_name: str = "learner.log",
                **kw) -> subprocess.Popen:
        log = self.tmp / log_name
        p = self.start([str(BIN / "learner"), "--port", str(port), "--run-dir", str(run_dir),
                        "--report-interval", "0.5", *flags], log, **kw)
        wait_for(lambda: "learner ready" in log.read_text(errors="replace") or p.poll() is not None, 60,
                 "learner ready")
        assert p.poll() is None, log.read_text()
        return p

    def actor(self, port: int, name: str = "actor", *flags: str) -> subprocess.Popen:
        return self.start([str(BIN / "actor"), "--learner", f"tcp://127.0.0.1:{port}", *flags],
                          self.tmp / f"{name}.log")

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass
