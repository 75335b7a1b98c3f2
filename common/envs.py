"""Environment construction shared by the actor and the learner.

``make_env`` builds any game through its family (common/families/: stable-retro, ALE,
ConnectX, plain Gymnasium) and ``env_signature`` tells the learner the shapes. This module
holds what every family shares: the wrappers and the common tail (reward clipping, seeding).

Frame stacking is deliberately NOT done here: the actor stacks frames so that each frame
crosses the wire once.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import cv2
import gymnasium as gym
import numpy as np

import common.pomdp  # noqa: F401 (registers the project's partially observed ids)

__all__ = [
    "ClipReward",
    "EnvError",
    "EnvSignature",
    "GrayResize",
    "MaxAndSkip",
    "SeedOnFirstReset",
    "env_signature",
    "finish",
    "make_env",
    "time_limit",
]


class EnvError(Exception):
    """One-line, user-facing message (no traceback needed)."""


@dataclasses.dataclass(frozen=True)
class EnvSignature:
    obs_shape: tuple[int, ...]  # ONE frame, before the actor's frame stacking
    obs_dtype: str  # numpy dtype name: 'uint8' or 'float32'
    n_actions: int
    is_image: bool
    action_mask: bool = False  # info["action_mask"] holds the legal actions each step
    episode_extras: str = ""  # info at a game's end holds these registered episode fields too
    lives: bool = False  # a lost life ends an episode; info["game_over"] says if the game did


# --------------------------------------------------------------------------- wrappers


class MaxAndSkip(gym.Wrapper):
    """Repeat an action ``skip`` times, sum rewards, return the max of the last two frames.

    Unlike gymnasium's MaxAndSkipObservation, an episode ending early returns the max of the
    two frames just before the end, not a stale buffer from the previous step.
    """

    def __init__(self, env: gym.Env, skip: int, max_pool: bool = True):
        super().__init__(env)
        self._skip = skip
        self._max_pool = max_pool

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        total = 0.0
        obs = prev = None
        for _ in range(self._skip):
            prev = obs
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        if self._max_pool and prev is not None:
            # Fresh array, since the env may still own `prev`: ~18 us against ~2.5 ms of emulation.
            obs = np.maximum(prev, obs)
        return obs, total, terminated, truncated, info


class GrayResize(gym.ObservationWrapper):
    """(H, W, 3|1) or (H, W) uint8 image -> (size, size) uint8 grayscale via OpenCV."""

    def __init__(self, env: gym.Env, size: int):
        super().__init__(env)
        shape = env.observation_space.shape
        self._rgb = len(shape) == 3 and shape[2] == 3
        self._squeeze = len(shape) == 3 and shape[2] == 1
        self._dsize = (size, size)
        self._resize = tuple(shape[:2]) != self._dsize
        self.observation_space = gym.spaces.Box(0, 255, (size, size), np.uint8)

    def observation(self, obs: np.ndarray) -> np.ndarray:
        # Gray first: resizing one channel is ~3x cheaper than resizing three.
        if self._rgb:
            obs = cv2.cvtColor(obs, cv2.COLOR_RGB2GRAY)
        elif self._squeeze:
            obs = obs[:, :, 0]
        if self._resize:
            obs = cv2.resize(obs, self._dsize, interpolation=cv2.INTER_AREA)
        return obs


class SeedOnFirstReset(gym.Wrapper):
    """Uses ``seed`` for the first ``reset()`` that is not given a seed of its own."""

    def __init__(self, env: gym.Env, seed: int):
        super().__init__(env)
        self._pending_seed: int | None = seed

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is None:
            seed = self._pending_seed
        self._pending_seed = None
        return self.env.reset(seed=seed, options=options)


# --------------------------------------------------------------------------- construction


class ClipReward(gym.Wrapper):
    """Reward -> its sign; the game's own reward stays in info['raw_reward'] for reporting."""

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["raw_reward"] = reward
        return obs, float(np.sign(reward)), terminated, truncated, info


def _check_args(frame_skip: int, frame_size: int, action_set: str) -> None:
    if frame_skip < 1:
        raise EnvError(f"frame_skip must be >= 1, got {frame_skip}")
    if frame_size < 1:
        raise EnvError(f"frame_size must be >= 1, got {frame_size}")
    if action_set != "default":
        raise EnvError(f"unknown action_set {action_set!r}: only 'default' is supported")


def finish(env: gym.Env, *, seed: int, clip_rewards: bool) -> gym.Env:
    """The tail every frame-based family shares: reward clipping, then the seed."""
    if clip_rewards:
        env = ClipReward(env)
    env = SeedOnFirstReset(env, seed)
    env.action_space.seed(seed)
    return env


def make_env(
    env_id: str,
    *,
    seed: int,
    frame_skip: int = 4,
    max_episode_steps: int | None = 27_000,
    clip_rewards: bool = False,
    frame_size: int = 84,
    action_set: str = "default",
    **extra: Any,
) -> gym.Env:
    """Build a preprocessed env: Discrete actions, ONE uint8 (frame_size, frame_size) frame for
    images or a float32 vector otherwise.

    ``max_episode_steps=None`` keeps a Gymnasium env's registered limit (e.g. 500 for
    CartPole-v1) and an int replaces it. ``extra`` holds family settings (e.g. the ALE's
    ``repeat_action_probability``); ``common.families.env_settings`` gives them all for a
    configuration. Raises ``EnvError``.
    """
    from common.families import family_for

    _check_args(frame_skip, frame_size, action_set)
    # OpenCV's thread pool doubles gray+resize time when actor processes share the cores.
    cv2.setNumThreads(1)
    return family_for(env_id).make(env_id, seed=seed, frame_skip=frame_skip,
                                   max_episode_steps=max_episode_steps, clip_rewards=clip_rewards,
                                   frame_size=frame_size, **extra)


def time_limit(env_id: str, settings: dict[str, Any]) -> int | None:
    """The most agent steps an episode of ``env_id`` takes under ``settings`` (make_env's
    keyword arguments): the limit set, else the one its family registers (None: none)."""
    from common.families import family_for

    return family_for(env_id).time_limit(env_id, settings)


def env_signature(env_id: str, **settings: Any) -> EnvSignature:
    """Shapes of what ``make_env`` with the same arguments yields; starts no retro emulator."""
    from common.families import family_for

    _check_args(settings.get("frame_skip", 4), settings.get("frame_size", 84),
                settings.get("action_set", "default"))
    return family_for(env_id).signature(env_id, **settings)
