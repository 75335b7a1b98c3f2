"""Shared helpers: free ports on 127.0.0.1, learner and actor processes, metrics readers.

The benchmarks (benchmarks/) reuse these helpers; tests never import a benchmark module.

Tests that cannot pass in silence: with RETROFLEET_CI=1 (set by .ci/run) a skipped test is a
failure (a fault test that cannot run there, say netns without root, must not pass green),
unless it is marked `may_skip` (its skip depends on an optional tool, not on the fault).
Locally a skip prints its reason (`-rs` in pytest's addopts).
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import NoReturn

import numpy as np
import pytest

from common.protocol import Rollout

ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("RETROFLEET_CI") == "1"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "may_skip: a skip of this test is no failure in CI (RETROFLEET_CI=1)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail") and item.get_closest_marker("may_skip") is None:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (RETROFLEET_CI=1), which counts as a failure: {reason}"
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


def cannot_run(reason: str) -> NoReturn:
    """A test that cannot run here (no root, no network namespaces, ...): in CI
    (RETROFLEET_CI=1, set by .ci/run) that is a failure; locally a skip, its reason printed (-rs)."""
    if os.environ.get("RETROFLEET_CI") == "1":
        pytest.fail(f"cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


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


def pipeline_result(run_dir: Path) -> dict:
    """What a finished run reached: from its learner.log's --stop-at-return line and metrics.jsonl."""
    text = (run_dir / "learner.log").read_text()
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    m = re.search(r"reached --stop-at-return \S+: mean of the last \d+ episodes (\S+) at ([\d,]+) steps, ([\d.]+) s",
                  text)
    return {
        "solved": m is not None,
        "steps": int(m.group(2).replace(",", "")) if m else rows[-1]["steps"],
        "seconds": float(m.group(3)) if m else rows[-1]["wall_s"],
        "final_mean_return": float(m.group(1)) if m else rows[-1]["mean_return"],
        "best_mean_return": max((r["mean_return"] for r in rows if r["mean_return"] is not None), default=None),
        "updates": rows[-1]["updates"],
        "policy_lag_mean": _mean([r["policy_lag_mean"] for r in rows if r["policy_lag_mean"] is not None]),
        "policy_lag_max": max([r["policy_lag_max"] for r in rows if r["policy_lag_max"] is not None], default=None),
    }


def _mean(xs: list[float]) -> float | None:
    return round(sum(xs) / len(xs), 3) if xs else None


def cartpole_rollout(actor_id: int, T: int = 32, *, version: int = 0, done_at: tuple[int, ...] = (),
                     reward: float = 1.0, logp: float = math.log(0.5), seed: int = 0) -> Rollout:
    """A valid CartPole-shaped rollout (float32 [4] frames, no frame stack). Episodes end at
    `done_at` (terminated) but are not filled in (`episodes=[]`): a test says what to claim."""
    rng = np.random.default_rng(seed)
    terminated = np.zeros(T, bool)
    terminated[list(done_at)] = True
    return Rollout(
        actor_id=actor_id, policy_version=version,
        frames=rng.normal(size=(T + 1, 4)).astype(np.float32),
        history=np.zeros((0, 4), np.float32),
        actions=rng.integers(0, 2, T).astype(np.int32),
        behaviour_logp=np.full(T, logp, np.float32),
        rewards=np.full(T, reward, np.float32),
        terminated=terminated, truncated=np.zeros(T, bool), episodes=[],
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


def solve_cartpole(run_dir: Path, *flags: str) -> dict:
    """CartPole-v1 through the pipeline (learner + 2 actors), its preset's settings, until the
    mean return of the last 20 episodes reaches 475, or 300,000 steps."""
    return run_pipeline(["--env", "CartPole-v1", "--seed", "1", "--stop-at-return", "475", "--return-window", "20",
                         "--total-frames", "300000", *flags], actors=2, run_dir=run_dir, timeout=420)


@pytest.fixture(scope="session")
def solved_cartpole(tmp_path_factory) -> tuple[Path, dict]:
    """One real async CartPole run to 475, shared: the learning test checks it, the policy tests
    load its checkpoints, the evaluation test looks at the final evaluation it played.
    (run directory, run_pipeline's result)."""
    run = tmp_path_factory.mktemp("solved") / "cartpole"
    return run, solve_cartpole(run, "--mode", "async")


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
