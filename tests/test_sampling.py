"""common/action_sampling.py: the one action sampler of actors, the actor host, evaluation and load_policy;
actor/rollout.py's RolloutBuilder (pure functions, no processes)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from actor.rollout import RolloutBuilder
from common.action_sampling import action_probs, sample_action, sample_actions
from common.framestack import rebuild_stacks


def test_sampled_actions_follow_the_softmax_and_repeat_with_the_seed():
    logits = torch.tensor([0.0, 1.0, 2.0, -1.0])
    probs = torch.softmax(logits.double(), 0).numpy()
    rng = np.random.default_rng(3)
    draws = [sample_action(logits, rng) for _ in range(40_000)]
    counts = np.bincount([a for a, _ in draws], minlength=4) / len(draws)
    assert np.allclose(counts, probs, atol=0.01)
    for a, logp in draws[:50]:
        assert logp == pytest.approx(math.log(probs[a]))
    again = np.random.default_rng(3)
    assert [sample_action(logits, again)[0] for _ in range(200)] == [a for a, _ in draws[:200]]


def test_greedy_is_the_argmax_and_draws_nothing():
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    action, logp = sample_action(np.array([0.1, 3.0, 0.2]), rng, greedy=True)
    assert action == 1 and logp == pytest.approx(math.log(action_probs(np.array([0.1, 3.0, 0.2]))[1]))
    assert rng.bit_generator.state == state


def test_epsilon_mixes_uniform_noise_into_the_behaviour_probability():
    logits = np.array([50.0, 0.0, 0.0, 0.0])  # the policy alone almost never picks 1-3
    rng = np.random.default_rng(1)
    draws = [sample_action(logits, rng, epsilon=0.4) for _ in range(20_000)]
    share = np.bincount([a for a, _ in draws], minlength=4) / len(draws)
    assert share[1:] == pytest.approx([0.1, 0.1, 0.1], abs=0.01)
    other = next(logp for a, logp in draws if a != 0)
    assert other == pytest.approx(math.log(0.1))  # the mixture's probability, not the policy's


def test_extreme_logits_stay_finite_and_one_observation_only():
    action, logp = sample_action(np.array([1e4, -1e4]), np.random.default_rng(0))
    assert action == 0 and math.isfinite(logp)
    with pytest.raises(ValueError, match="one observation"):
        sample_action(np.zeros((2, 3)), np.random.default_rng(0))


def test_batch_frequencies_follow_the_softmax():
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0]])
    probs = torch.softmax(logits.double(), 1).numpy()[0]
    rng = np.random.default_rng(1)
    n = 100_000
    actions, logp = sample_actions(logits.expand(n, 4), rng.random(n))
    freq = np.bincount(actions, minlength=4) / n
    np.testing.assert_allclose(freq, probs, atol=0.006)  # about 4 standard deviations
    np.testing.assert_allclose(logp, np.log(probs[actions]), rtol=1e-6)
    assert actions.dtype == np.int32 and logp.dtype == np.float32


def test_batch_epsilon_per_row_and_its_log_probability():
    logits = torch.tensor([[50.0, 0.0, 0.0], [50.0, 0.0, 0.0]])  # nearly certain of action 0
    eps = np.array([0.0, 0.3])
    # u near 1 lands on the last action; only the mixture makes that likely enough to matter
    actions, logp = sample_actions(logits, np.array([0.99, 0.99]), eps)
    assert actions.tolist() == [0, 2]
    assert logp[1] == pytest.approx(math.log(0.3 / 3), rel=1e-5)
    assert logp[0] == pytest.approx(0.0, abs=1e-6)


class _Draw:
    """A generator whose one draw is `u` (sample_action draws exactly one uniform)."""

    def __init__(self, u: float):
        self.u = u

    def random(self) -> float:
        return self.u


def test_a_row_draws_as_sample_action_does_whatever_batch_it_is_in():
    rng = np.random.default_rng(1)
    logits = torch.from_numpy(rng.normal(size=(8, 12)).astype(np.float32))
    u = rng.random(8)
    whole = sample_actions(logits, u, 0.1)
    for i in range(8):
        one = sample_actions(logits[i:i + 1], u[i:i + 1], 0.1)
        assert one[0][0] == whole[0][i] and one[1][0] == whole[1][i]
        assert sample_action(logits[i], _Draw(u[i]), epsilon=0.1)[0] == whole[0][i]


def test_builder_cuts_rollouts_whose_stacks_the_learner_rebuilds():
    """Every stack the policy saw equals what the learner rebuilds from the rollout, across
    episode ends (reset frames) and rollout boundaries; episodes carry return and length."""
    rng = np.random.default_rng(2)
    T, size = 5, 4
    counter = iter(range(1, 10_000))

    def frame() -> np.ndarray:
        return np.full((2, 2), next(counter) % 256, np.uint8)

    b = RolloutBuilder(frame(), actor_id=3, unroll_length=T, frame_stack=size, frame_skip=4)
    rollouts, seen, current = [], [], []
    ep_len = 0
    for step in range(4 * T):
        current.append(b.stack.buf.copy())
        b.act(int(rng.integers(0, 4)), -1.0, policy_version=10 + step // 7)
        done = bool(rng.random() < 0.25)
        ep_len = 0 if done else ep_len + 1
        r = b.observe(frame(), 1.0, terminated=done, truncated=False, raw_reward=2.0)
        if r is not None:
            current.append(b.stack.buf.copy())  # the bootstrap observation
            rollouts.append(r)
            seen.append(np.stack(current))
            current = []
    assert len(rollouts) == 4
    for r, stacks in zip(rollouts, seen, strict=True):
        assert r.actor_id == 3 and r.frames.shape == (T + 1, 2, 2) and r.history.shape == (size - 1, 2, 2)
        np.testing.assert_array_equal(rebuild_stacks(r.history, r.frames, r.terminated | r.truncated), stacks)
        for ep in r.episodes:
            assert ep["return"] == 2.0 * ep["length"] and ep["frames"] == 4 * ep["length"]
        assert len(r.episodes) == int(r.terminated.sum())
    # a rollout carries the oldest policy version it acted with
    assert [r.policy_version for r in rollouts] == [10, 10, 11, 12]
