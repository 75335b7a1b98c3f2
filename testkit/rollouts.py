"""Rollouts made by hand, valid as they come, for tests and floods to send or to spoil."""

from __future__ import annotations

import math

import numpy as np

from common.protocol import Rollout


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
