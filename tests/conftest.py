"""pytest's side of the shared helpers: fixtures, the CI skip rule, and the helpers of testkit/
(processes, ports, run files, hand-made rollouts) under the names tests import from here.

The benchmarks import testkit/ directly; tests never import a benchmark module.

Tests that cannot pass in silence: with RETROFLEET_CI=1 (set by .ci/run) a skipped test is a
failure (a fault test that cannot run there, say netns without root, must not pass green),
unless it is marked `may_skip` (its skip depends on an optional tool, not on the fault).
Locally a skip prints its reason (`-rs` in pytest's addopts).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

from testkit.processes import (
    BIN,
    CARTPOLE,
    ROOT,
    Procs,
    free_base_port,
    run_pipeline,
    stop_processes,
    wait_for,
)
from testkit.rollouts import cartpole_rollout
from testkit.run_files import last_metrics, pipeline_result, read_actors, read_metrics

__all__ = ["BIN", "CARTPOLE", "ROOT", "Procs", "assert_learner_replays_exactly", "cannot_run", "cartpole_rollout",
           "free_base_port", "last_metrics", "pipeline_result", "read_actors", "read_metrics", "run_pipeline",
           "solve_cartpole", "stop_processes", "wait_for"]

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


def cannot_run(reason: str) -> NoReturn:
    """A test that cannot run here (no root, no network namespaces, ...): in CI
    (RETROFLEET_CI=1, set by .ci/run) that is a failure; locally a skip, its reason printed (-rs)."""
    if os.environ.get("RETROFLEET_CI") == "1":
        pytest.fail(f"cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def assert_learner_replays_exactly(model, cfg, rollout_spec, rollouts) -> None:
    """The learner, replaying `rollouts` (through the wire and its checks) with the weights that
    collected them, finds V-trace ratios of exactly 1: actor and learner computed the same policy
    at every step, recurrent state and resets included."""
    import torch

    from common import protocol
    from learner.batcher import collate
    from learner.trainer import Trainer

    back = [protocol.validate_rollout(protocol.decode(protocol.encode_rollout(r)), rollout_spec, latest_version=0)
            for r in rollouts]
    stats = Trainer(model, cfg, torch.device("cpu")).update(collate(back, 0)).stats
    assert stats["losses/rho_mean"] == pytest.approx(1.0, abs=1e-5)
    assert stats["losses/approx_kl"] == pytest.approx(0.0, abs=1e-6)


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
