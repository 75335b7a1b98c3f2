"""common/policy.py: the one action sampler of actors, evaluation and load_policy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from common.policy import action_probs, sample_action


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
