"""The actor host's core without a learner: real emulator processes, shared slots, the batched
inference loop and the rollouts it cuts (actor/emulator_pool.py, slots.py, sampler.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import numpy as np
import psutil
import pytest
import torch

from actor.inference import BatchedPolicy
from actor.rollout import RolloutCollector
from actor.sampler import Member, Sampler
from common import protocol
from common.config import Config, actor_seed
from common.model import build_model, state_to_numpy
from common.runspec import RunSpec
from tests.conftest import ROOT, assert_learner_replays_exactly, wait_for

T = 16


def settings(env: str, **config: Any) -> RunSpec:
    """A welcome's run spec for `env` (learner defaults, a short unroll), as an actor reads it."""
    return RunSpec.from_wire(RunSpec.from_config(Config(env=env, hidden_size=32, unroll_length=T, **config)).to_wire())


def spec_of(s: RunSpec) -> protocol.RolloutSpec:
    return s.rollout


def run_until(sampler: Sampler, cond, timeout: float, out: dict) -> None:
    """Step the sampler until `cond()`; rollouts land in out[slot]."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out; rollouts per slot {({k: len(v) for k, v in out.items()})}"
        for k, r in sampler.step(policy_version=0, timeout=0.2):
            out.setdefault(k, []).append(r)


def start_all(sampler: Sampler, n: int, out: dict) -> None:
    """Emulators 0..n-1 for actors 0..n-1, stepped until each has cut a rollout."""
    for k in range(n):
        sampler.assign(k, Member(k, actor_seed(1, k)))
    run_until(sampler, lambda: all(len(out.get(k, [])) >= 1 for k in range(n)), 60, out)


@pytest.fixture
def cartpole():
    s = settings("CartPole-v1")
    sampler = Sampler.from_spec(s, 3, torch.device("cpu"))
    yield s, sampler
    sampler.close()


def test_rollouts_from_three_emulators_are_valid_and_carry_their_actor_ids(cartpole):
    s, sampler = cartpole
    for k in range(3):
        sampler.assign(k, Member(actor_id=10 + k, seed=actor_seed(1, 10 + k), epsilon=0.1 * k))
    out: dict[int, list] = {}
    run_until(sampler, lambda: all(len(out.get(k, [])) >= 4 for k in range(3)), 60, out)
    spec = spec_of(s)
    for k in range(3):
        for r in out[k]:
            msg = protocol.decode(protocol.encode_rollout(r))
            v = protocol.validate_rollout(msg, spec, latest_version=0)
            assert v.actor_id == 10 + k
            # CartPole pays 1 a step: an episode's return is its length
            assert all(ep["return"] == ep["length"] for ep in v.episodes)
    assert sampler.stats.samples >= 3 * 4 * T
    assert sampler.stats.samples / sampler.stats.batches > 1.0, "the policy ran on batches, not single steps"


def test_same_seed_same_rollout_as_the_one_process_actor():
    """A host's emulator with seed s and a one-process actor with seed s, same weights: the
    same first rollout (actions, rewards, frames), as the host only moves where the policy runs."""
    s = settings("CartPole-v1")
    seed = actor_seed(7, 2)
    torch.manual_seed(0)
    model = build_model(s.model.as_dict()).eval()
    collector = RolloutCollector(s.make_env(seed), actor_id=2,
                                 seed=seed, unroll_length=T, frame_stack=1, epsilon=0.05)
    expected = [collector.collect(model, 0) for _ in range(3)]
    sampler = Sampler.from_spec(s, 2, torch.device("cpu"))
    try:
        sampler.policy.load(state_to_numpy(model))
        sampler.assign(0, Member(2, seed, 0.05))
        sampler.assign(1, Member(3, actor_seed(7, 3), 0.0))  # a neighbour, to make real batches
        out: dict[int, list] = {}
        run_until(sampler, lambda: len(out.get(0, [])) >= 3, 60, out)
    finally:
        sampler.close()
    for got, want in zip(out[0], expected, strict=False):
        np.testing.assert_array_equal(got.actions, want.actions)
        np.testing.assert_array_equal(got.frames, want.frames)
        np.testing.assert_array_equal(got.rewards, want.rewards)
        np.testing.assert_array_equal(got.terminated, want.terminated)
        np.testing.assert_allclose(got.behaviour_logp, want.behaviour_logp, rtol=1e-5)
        # epsilon 0.05: both send the unmixed policy's log-probs for the PPO ratio (issue 17)
        assert got.policy_logp is not None and not np.array_equal(got.policy_logp, got.behaviour_logp)
        np.testing.assert_allclose(got.policy_logp, want.policy_logp, rtol=1e-5)
    assert all(r.policy_logp is None for r in out.get(1, []))  # the greedy neighbour sends none


def test_time_limits_send_the_observation_they_hid():
    """A truncated step's rollout carries the observation the time limit hid (written by the
    emulator before its reset), so the learner bootstraps from it; the rollouts validate."""
    s = settings("CartPole-v1", max_episode_steps=5)
    sampler = Sampler.from_spec(s, 2, torch.device("cpu"))
    try:
        out: dict[int, list] = {}
        start_all(sampler, 2, out)
        run_until(sampler, lambda: all(len(out[k]) >= 2 for k in range(2)), 30, out)
    finally:
        sampler.close()
    spec = spec_of(s)
    for r in out[0] + out[1]:
        cut = r.truncated & ~r.terminated
        assert len(r.finals()) == cut.sum() > 0
        protocol.validate_rollout(protocol.decode(protocol.encode_rollout(r, token="t" * 32)), spec, latest_version=0)
        assert not np.array_equal(r.finals()[0], r.frames[np.flatnonzero(cut)[0] + 1]), "not the reset frame"


def test_killed_emulator_is_reported_and_restarted_while_the_others_go_on(cartpole):
    s, sampler = cartpole
    out: dict[int, list] = {}
    start_all(sampler, 3, out)
    victim = sampler.pool.pids()[1]
    os.kill(victim, signal.SIGKILL)
    gone: list = []

    def noticed() -> bool:
        gone.extend(sampler.pool.exited())
        return bool(gone)

    before = {k: len(out.get(k, [])) for k in (0, 2)}
    run_until(sampler, noticed, 10, out)
    assert gone == [(1, -signal.SIGKILL)]
    sampler.vacate(1)
    run_until(sampler, lambda: all(len(out[k]) >= before[k] + 2 for k in (0, 2)), 30, out)  # others go on
    n1 = len(out.get(1, []))
    sampler.assign(1, Member(3, actor_seed(1, 3)))
    run_until(sampler, lambda: len(out.get(1, [])) >= n1 + 2, 60, out)
    assert out[1][-1].actor_id == 3
    assert sampler.pool.pids()[1] != victim and psutil.pid_exists(sampler.pool.pids()[1])


def test_frozen_emulator_is_stalled_until_it_thaws(cartpole):
    s, sampler = cartpole
    out: dict[int, list] = {}
    start_all(sampler, 2, out)
    pid = sampler.pool.pids()[0]
    os.kill(pid, signal.SIGSTOP)
    try:
        run_until(sampler, lambda: sampler.pool.stalled(0.5) == [0], 10, out)
    finally:
        os.kill(pid, signal.SIGCONT)
    run_until(sampler, lambda: sampler.pool.stalled(0.5) == [], 10, out)
    assert sampler.pool.exited() == []


HOST_SCRIPT = textwrap.dedent("""
    import sys, time, torch
    from actor.sampler import Member, Sampler
    from tests.test_host_core import settings
    sampler = Sampler.from_spec(settings("CartPole-v1"), 2, torch.device("cpu"))
    for k in range(2):
        sampler.assign(k, Member(k, k))
    while True:
        sampler.step(0, 0.2)
        if sampler.stats.samples > 50:
            print("pids", *sampler.pool.pids(), flush=True)
""")


def test_emulators_end_when_their_host_is_killed(tmp_path):
    """No orphans: an emulator whose host died (SIGKILL, no clean-up) exits by itself."""
    p = subprocess.Popen([sys.executable, "-c", HOST_SCRIPT], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("pids"), line
        pids = [int(x) for x in line.split()[1:]]
        assert all(psutil.pid_exists(x) for x in pids)
        p.kill()
        p.wait(10)
        wait_for(lambda: not any(psutil.pid_exists(x) and psutil.Process(x).status() != "zombie"
                                 for x in pids), 10, "emulators to exit")
    finally:
        p.kill()


def test_close_stops_every_emulator(cartpole):
    s, sampler = cartpole
    for k in range(3):
        sampler.assign(k, Member(k, k))
    out: dict[int, list] = {}
    run_until(sampler, lambda: sampler.stats.samples > 30, 60, out)
    pids = sampler.pool.pids()
    procs = [psutil.Process(x) for x in pids]
    t0 = time.monotonic()
    sampler.close()
    assert time.monotonic() - t0 < 3
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in procs)


def test_airstriker_frames_through_shared_memory():
    """Two real Airstriker emulators: 84x84 uint8 frames, the agreed rollout spec, episode
    frames counted with frame skip 4, and the emulators stepping most of the wall clock."""
    s = settings("Airstriker-Genesis-v0")
    sampler = Sampler.from_spec(s, 2, torch.device("cpu"))
    try:
        for k in range(2):
            sampler.assign(k, Member(k, actor_seed(1, k)))
        out: dict[int, list] = {}
        run_until(sampler, lambda: all(len(out.get(k, [])) >= 2 for k in range(2)), 120, out)
    finally:
        sampler.close()
    spec = spec_of(s)
    assert spec.frame_shape == (84, 84)
    for k in range(2):
        for r in out[k]:
            v = protocol.validate_rollout(protocol.decode(protocol.encode_rollout(r)), spec, latest_version=0)
            assert v.frames.dtype == np.uint8 and v.frames.shape == (T + 1, 84, 84)
            assert v.frames.std() > 0, "real game frames, not zeros"
    first = out[0][0].frames
    assert not np.array_equal(first, out[1][0].frames), "each emulator has its own slot"


@pytest.mark.may_skip  # a capability skip (no GPU here), not a fault test that could not run
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA on this machine: the host's GPU path needs one")
def test_policy_on_cuda_matches_the_cpu_and_cuts_valid_rollouts():
    s = settings("Airstriker-Genesis-v0")
    cpu = BatchedPolicy(s.model.as_dict(), torch.device("cpu"), 8)
    gpu = BatchedPolicy(s.model.as_dict(), torch.device("cuda"), 8)
    gpu.load(state_to_numpy(cpu.cpu_model))
    m = s.model
    obs = np.random.default_rng(0).integers(0, 256, (5, m.frame_stack, *m.frame_shape), dtype=np.uint8)
    torch.testing.assert_close(gpu.logits(obs), cpu.logits(obs), rtol=1e-3, atol=1e-3)
    sampler = Sampler.from_spec(s, 2, torch.device("cuda"))
    try:
        out: dict[int, list] = {}
        start_all(sampler, 2, out)
    finally:
        sampler.close()
    for k in range(2):
        protocol.validate_rollout(protocol.decode(protocol.encode_rollout(out[k][0], token="t" * 32)), spec_of(s),
                                  latest_version=0)


def test_the_host_keeps_one_lstm_state_per_slot_and_resets_it_on_done():
    """--model lstm in the host: each emulator slot carries its own recurrent state from rollout
    to rollout and resets it where an episode ends. The learner, replaying the rollouts from the
    states they carry with the same weights, finds V-trace ratios of exactly 1; a host that
    forgot the reset (or mixed slots' states) would not."""
    cfg = Config(env="CartPole-v1", hidden_size=32, unroll_length=T, model="lstm", lstm_hidden=16,
                 batch_size=4 * T, epochs=1, minibatches=1)
    s = RunSpec.from_wire(RunSpec.from_config(cfg).to_wire())
    torch.manual_seed(5)
    model = build_model(s.model.as_dict()).eval()
    with torch.no_grad():
        model.policy.weight.mul_(1000.0)  # from its 0.01-gain start: logits that depend on the state
    sampler = Sampler.from_spec(s, 2, torch.device("cpu"))
    try:
        sampler.policy.load(state_to_numpy(model))
        for k in range(2):
            sampler.assign(k, Member(k, actor_seed(3, k)))
        out: dict[int, list] = {}
        run_until(sampler, lambda: all(len(out.get(k, [])) >= 4 for k in range(2)), 60, out)
    finally:
        sampler.close()
    rollouts = [r for k in range(2) for r in out[k][:4]]
    assert sum(int(r.dones[:-1].sum()) for r in rollouts) >= 2, "episodes must end inside the rollouts"
    assert all(np.abs(out[k][1].core_state).max() > 0 for k in range(2)), "a later rollout starts from a held state"
    assert_learner_replays_exactly(model, cfg, s.rollout, rollouts)
