"""Truncation is not termination (issue 8.13): the actor sends the observation a time limit
hid, and the learner bootstraps from its value instead of treating the step as an end."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from actor.rollout import RolloutCollector
from common.config import Config
from common.envs import make_env
from common.model import build_model, model_spec
from common.protocol import Rollout, RolloutSpec, decode, encode_rollout, validate_rollout
from learner.batcher import collate
from learner.trainer import Trainer


class FinalObs(gym.Wrapper):
    """Records the observation each truncated step returned."""

    def __init__(self, env):
        super().__init__(env)
        self.finals = []

    def step(self, action):
        obs, reward, term, trunc, info = self.env.step(action)
        if trunc and not term:
            self.finals.append(np.array(obs))
        return obs, reward, term, trunc, info


def test_actor_sends_the_observation_a_time_limit_hid():
    env = FinalObs(make_env("CartPole-v1", seed=3, frame_skip=1, max_episode_steps=5))
    model = build_model(model_spec((4,), 1, 2, 16))
    c = RolloutCollector(env, actor_id=0, seed=3, unroll_length=16, frame_stack=1)
    torch.manual_seed(0)
    rollouts = [c.collect(model, 0) for _ in range(3)]
    sent = [f for r in rollouts for f in r.finals()]
    assert len(sent) == len(env.finals) > 0
    for got, want in zip(sent, env.finals, strict=True):
        np.testing.assert_array_equal(got, want)
    spec = RolloutSpec(16, (4,), "float32", 1, 2, max_episode_steps=5)
    for r in rollouts:  # and it survives the wire
        back = validate_rollout(decode(encode_rollout(r)), spec, latest_version=0)
        np.testing.assert_array_equal(back.finals(), r.finals())
        assert back.cut.sum() == len(back.finals())


def _batch(final_scale: float):
    T = 8
    rng = np.random.default_rng(0)
    cut = np.zeros(T, bool)
    cut[3] = True
    rollouts = [Rollout(b, 0, rng.normal(size=(T + 1, 4)).astype(np.float32), np.zeros((0, 4), np.float32),
                        rng.integers(0, 2, T).astype(np.int32), np.full(T, np.log(0.5), np.float32),
                        np.ones(T, np.float32), np.zeros(T, bool), cut.copy(),
                        final_frames=np.full((1, 4), final_scale, np.float32)) for b in range(2)]
    return collate(rollouts, 0)


def test_learner_bootstraps_from_the_value_of_the_hidden_observation():
    cfg = Config(env="CartPole-v1", vf_coef=1.0, ent_coef=0.0)
    results = []
    for scale in (0.0, 3.0):
        torch.manual_seed(0)
        t = Trainer(build_model(model_spec((4,), 1, 2, 16)), cfg, torch.device("cpu"))
        results.append(t.update(_batch(scale)).stats["losses/value_loss"])
    # the hidden observation's value enters the targets: another final observation, another loss
    assert results[0] != results[1]
    b = _batch(0.0)
    assert b.cut[3].all() and not b.terminated.any() and b.dones[3].all()  # still a stack reset
    assert b.final_frames.shape == (2, 4) and b.final_at.tolist() == [[3, 0], [3, 1]]


class FullFinalForward(Trainer):
    """The trainer as it was: every minibatch step ran the final-value forward over the whole batch."""

    def _final_values(self, final_obs, final_at, states, mb, B):
        out = torch.zeros(states.shape[0] - 1, B)
        with torch.no_grad():
            _, v = self.model(final_obs)
        out[final_at[:, 0], final_at[:, 1]] = v
        return out[:, mb]


def _cut_batch():
    T, rng = 8, np.random.default_rng(3)
    rollouts = []
    for b in range(4):
        cut = np.zeros(T, bool)
        cut[[b, 6]] = True  # two time limits a rollout, at different steps
        rollouts.append(Rollout(b, 0, rng.normal(size=(T + 1, 4)).astype(np.float32), np.zeros((0, 4), np.float32),
                                rng.integers(0, 2, T).astype(np.int32), np.full(T, np.log(0.5), np.float32),
                                np.ones(T, np.float32), np.zeros(T, bool), cut,
                                final_frames=rng.normal(size=(2, 4)).astype(np.float32) * 3))
    return collate(rollouts, 0)


def test_each_minibatch_runs_the_final_value_forward_on_its_own_hidden_observations_only():
    cfg = Config(env="CartPole-v1", vf_coef=1.0, epochs=2, minibatches=2, unroll_length=8)
    trainers = []
    for cls in (Trainer, FullFinalForward):
        torch.manual_seed(0)
        trainers.append(cls(build_model(model_spec((4,), 1, 2, 16)), cfg, torch.device("cpu")))
    rows: list[int] = []
    trainers[0].model.register_forward_hook(lambda m, inputs, out: rows.append(inputs[0].shape[0]))
    torch.manual_seed(1)
    new = trainers[0].update(_cut_batch())
    torch.manual_seed(1)  # the same minibatch order
    old = trainers[1].update(_cut_batch())
    # per step: the minibatch's 2 x 9 observations, then its 2 x 2 hidden ones (not all 8)
    assert rows == [18, 4] * 4
    assert new.stats["losses/value_loss"] == old.stats["losses/value_loss"]
    for a, b in zip(trainers[0].model.state_dict().values(), trainers[1].model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
