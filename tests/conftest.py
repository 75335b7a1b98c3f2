"""Shared helpers: free ports on 127.0.0.1, learner and actor processes, metrics readers."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from common.protocol import Rollout
from learner.bench_learning import free_base_port

__all__ = ["free_base_port"]

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def cartpole_rollout(actor_id: int, T: int = 32) -> Rollout:
    """A valid CartPole-shaped rollout (float32 [4] frames, no frame stack)."""
    rng = np.random.default_rng(0)
    return Rollout(
        actor_id=actor_id, policy_version=0,
        frames=rng.normal(size=(T + 1, 4)).astype(np.float32),
        history=np.zeros((0, 4), np.float32),
        actions=rng.integers(0, 2, T).astype(np.int32),
        behaviour_logp=np.full(T, math.log(0.5), np.float32),
        rewards=np.ones(T, np.float32),
        terminated=np.zeros(T, bool), truncated=np.zeros(T, bool), episodes=[],
    )


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

    def learner(self, *flags: str, port: int, run_dir: Path, log_name: str = "learner.log") -> subprocess.Popen:
        log = self.tmp / log_name
        p = self.start([str(BIN / "learner"), "--port", str(port), "--run-dir", str(run_dir),
                        "--report-interval", "0.5", *flags], log)
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


@pytest.fixture
def procs(tmp_path: Path):
    ps = Procs(tmp_path)
    yield ps
    ps.stop_all()


def wait_for(cond, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def last_metrics(run_dir: Path) -> dict:
    rows = read_metrics(run_dir)
    return rows[-1] if rows else {}


def read_actors(run_dir: Path) -> list[dict]:
    path = run_dir / "actors.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
