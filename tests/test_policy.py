"""load_policy on checkpoints written by real learner runs (learner + actor processes over ZeroMQ):
CartPole trained to a mean return of 475, and a short Airstriker run for the frame stack."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from common.framestack import FrameStack
from learner import checkpoint
from learner.trained_policy import Policy, PolicyError, load_policy
from tests.conftest import ROOT, run_pipeline


@pytest.fixture(scope="module")
def cartpole_run(solved_cartpole):
    run, result = solved_cartpole
    assert result["solved"], result
    return run


@pytest.fixture(scope="module")
def airstriker_run(tmp_path_factory):
    """A real Airstriker run just long enough for one update; the learner's final checkpoint."""
    run = tmp_path_factory.mktemp("policy") / "air"
    run_pipeline(["--total-frames", "2048", "--batch-size", "256", "--eval-interval", "0"], actors=1, run_dir=run, timeout=180)
    return run


def _play(policy: Policy, episodes: int, seed: int) -> list[float]:
    env = policy.make_env(seed=seed)
    returns = []
    try:
        for _ in range(episodes):
            obs, _ = env.reset()
            policy.reset()
            total, done = 0.0, False
            while not done:
                obs, reward, term, trunc, _ = env.step(policy.act(obs))
                total += reward
                done = term or trunc
            returns.append(total)
    finally:
        env.close()
    return returns


def test_trained_cartpole_policy_loads_from_run_or_file_and_balances(cartpole_run):
    policy = load_policy(cartpole_run)
    newest = checkpoint.list_checkpoints(cartpole_run / "checkpoints")[-1]
    assert policy.checkpoint == newest
    assert load_policy(newest).checkpoint == newest
    assert policy.frame_shape == (4,) and policy.frame_stack == 1 and policy.n_actions == 2
    returns = _play(policy, episodes=3, seed=5)
    # a random policy averages about 22. Not 475: the run stopped on the sampled episodes of
    # weights a few updates older, and the final weights played greedily have given 156-168
    # (CI, 2026-12-06) as well as 500
    assert np.mean(returns) >= 100, returns


def test_batch_and_single_observations_agree_and_sampling_is_seeded(cartpole_run):
    policy = load_policy(cartpole_run)
    obs = np.random.default_rng(0).normal(scale=0.5, size=(64, 4)).astype(np.float32)
    batch = policy.act(obs)
    assert isinstance(batch, np.ndarray) and batch.shape == (64,) and batch.dtype == np.int64
    singles = [policy.act(o) for o in obs]
    assert all(isinstance(a, int) for a in singles) and singles == batch.tolist()
    assert set(batch.tolist()) == {0, 1}  # a trained CartPole policy pushes both ways

    a = load_policy(cartpole_run, seed=3).act(obs, greedy=False)
    b = load_policy(cartpole_run, seed=3).act(obs, greedy=False)
    assert a.tolist() == b.tolist()
    probs = torch.softmax(policy.logits(obs).double(), -1).numpy()
    assert probs.shape == (64, 2) and np.allclose(probs.sum(-1), 1)


def test_wrong_input_and_missing_runs_are_one_line_errors(cartpole_run, tmp_path):
    policy = load_policy(cartpole_run)
    with pytest.raises(PolicyError, match=r"shape \(3,\) does not fit this policy"):
        policy.act(np.zeros(3, np.float32))
    with pytest.raises(PolicyError, match="run directory not found"):
        load_policy(tmp_path / "nope")
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    with pytest.raises(PolicyError, match="no checkpoint in"):
        load_policy(tmp_path / "empty")


def test_image_policy_stacks_frames_step_by_step_as_an_actor_does(airstriker_run):
    policy = load_policy(airstriker_run)
    assert policy.frame_shape == (84, 84) and policy.frame_stack == 4
    _, ckpt = checkpoint.load_latest(airstriker_run / "checkpoints")
    assert ckpt["counters"]["updates"] >= 1, "the learner trained before it wrote this checkpoint"
    env = policy.make_env(seed=2)
    try:
        obs, _ = env.reset()
        policy.reset()
        stack = FrameStack(4, obs.shape, obs.dtype)  # what actor.rollout keeps
        stack.reset(obs)
        for step in range(40):
            got = policy.logits(obs)  # one frame: pushed onto the policy's own stack
            with torch.inference_mode():
                want = policy.model.policy_logits(torch.from_numpy(stack.buf).unsqueeze(0))
            assert torch.allclose(got, want), f"step {step}"
            assert torch.allclose(policy._forward(stack.buf[None]), want)
            if step == 20:  # a full stack and a batch of stacks are taken as they are
                assert policy.act(stack.buf.copy()) == int(torch.argmax(want))
                assert policy.act(np.stack([stack.buf, stack.buf])).tolist() == [int(torch.argmax(want))] * 2
                policy.reset()  # ... so the step-by-step stack restarts from the next frame
                stack.reset(obs)
                continue
            obs, _, term, trunc, _ = env.step(int(torch.argmax(got)))
            assert not (term or trunc)
            stack.push(obs)
        screen = env.unwrapped.get_screen()  # a raw RGB screen is grayed and resized as in training
        assert screen.shape[-1] == 3 and isinstance(policy.act(screen), int)
    finally:
        env.close()


def test_the_readme_example_runs_as_written(cartpole_run, monkeypatch):
    """The five lines in the README, on a run the learner wrote (its path swapped in)."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(from learner.trained_policy import load_policy\n.*?)```", readme, re.S).group(1)
    assert block.count("\n") <= 8 and 'load_policy("runs/cartpole")' in block
    scope: dict = {}
    exec(compile(block.replace('"runs/cartpole"', repr(str(cartpole_run))), "README", "exec"), scope)
    assert scope["done"] and isinstance(scope["reward"], float)
    scope["env"].close()
