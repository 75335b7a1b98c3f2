"""Partially observed tasks the project ships as Gymnasium ids (registered on import of
common.envs): a feed-forward policy cannot solve them, a recurrent one can.

``retrofleet/CartPoleNoVel-v1``: CartPole-v1 with the two velocities hidden (the observation is
cart position and pole angle only), 500-step limit as CartPole-v1.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

CARTPOLE_NOVEL = "retrofleet/CartPoleNoVel-v1"


class HideVelocities(gym.ObservationWrapper):
    """CartPole's [x, x_dot, theta, theta_dot] -> [x, theta]."""

    KEEP = np.array([0, 2])

    def __init__(self, env: gym.Env):
        super().__init__(env)
        space = env.observation_space
        self.observation_space = gym.spaces.Box(space.low[self.KEEP], space.high[self.KEEP], dtype=np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.asarray(observation, dtype=np.float32)[self.KEEP]


def make_cartpole_novel(**kwargs) -> gym.Env:
    return HideVelocities(gym.make("CartPole-v1", max_episode_steps=-1, **kwargs).unwrapped)


def register() -> None:
    if CARTPOLE_NOVEL not in gym.registry:
        gym.register(CARTPOLE_NOVEL, entry_point=make_cartpole_novel, max_episode_steps=500)


register()
