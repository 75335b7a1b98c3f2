"""Partially observed tasks the project ships as Gymnasium ids (registered on import of
common.envs): a feed-forward policy cannot solve them, a recurrent one can.

``retrofleet/CartPoleNoVel-v1``: CartPole-v1 with the two velocities hidden (the observation is
cart position and pole angle only, each divided by the bound that ends an episode, 2.4 and
0.2095 rad, so both lie in [-1, 1] while it runs: the velocities the policy must infer are then
differences of a size a network notices), 500-step limit as CartPole-v1.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

CARTPOLE_NOVEL = "retrofleet/CartPoleNoVel-v1"


class HideVelocities(gym.ObservationWrapper):
    """CartPole's [x, x_dot, theta, theta_dot] -> [x / 2.4, theta / 0.2095]."""

    KEEP = np.array([0, 2])
    SCALE = np.array([1 / 2.4, 1 / (12 * 2 * np.pi / 360)], np.float32)  # CartPole's termination bounds

    def __init__(self, env: gym.Env):
        super().__init__(env)
        space = env.observation_space
        self.observation_space = gym.spaces.Box(space.low[self.KEEP] * self.SCALE, space.high[self.KEEP] * self.SCALE,
                                                dtype=np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.asarray(observation, dtype=np.float32)[self.KEEP] * self.SCALE


def make_cartpole_novel(**kwargs) -> gym.Env:
    return HideVelocities(gym.make("CartPole-v1", max_episode_steps=-1, **kwargs).unwrapped)


def register() -> None:
    if CARTPOLE_NOVEL not in gym.registry:
        gym.register(CARTPOLE_NOVEL, entry_point=make_cartpole_novel, max_episode_steps=500)


register()
