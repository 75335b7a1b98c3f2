"""Plain Gymnasium envs: any registered id with a Discrete action space and a Box observation.

One step is one env step: --frame-skip does not apply (``make`` still honours a frame_skip
passed to it directly). Images are grayscaled and resized; vectors become float32.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from common.envs import EnvError, GrayResize, MaxAndSkip, finish
from common.families import Family


def _is_image(space: gym.Space) -> bool:
    shape = space.shape or ()
    return (
        isinstance(space, gym.spaces.Box)
        and space.dtype == np.uint8
        and (len(shape) == 2 or (len(shape) == 3 and shape[2] in (1, 3)))
    )


class GymFamily(Family):
    name = "Gymnasium"
    uses_frame_skip = False

    def matches(self, env_id: str) -> bool:
        return True  # the fallback: Gymnasium says whether it knows the id when it is made

    def preset_for(self, env_id: str) -> str | None:
        return None  # presets.toml's `envs` patterns pick per game (classic-control)

    def make(self, env_id: str, *, seed: int, frame_skip: int, max_episode_steps: int | None,
             clip_rewards: bool, frame_size: int, **extra: Any) -> gym.Env:
        try:
            # -1 drops the registered TimeLimit when we apply our own (in agent steps) later.
            env = gym.make(env_id, max_episode_steps=-1 if max_episode_steps is not None else None)
        except (gym.error.Error, ImportError) as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise EnvError(
                f"cannot make {env_id!r}: not a stable-retro game, and Gymnasium says: {msg}"
            ) from e
        act, obs = env.action_space, env.observation_space
        if not isinstance(act, gym.spaces.Discrete) or act.start != 0:
            env.close()
            raise EnvError(f"{env_id}: only discrete action spaces are supported, got {act}")
        if not isinstance(obs, gym.spaces.Box):
            env.close()
            raise EnvError(f"{env_id}: only Box observation spaces are supported, got {obs}")
        image = _is_image(obs)
        if frame_skip > 1:
            env = MaxAndSkip(env, frame_skip, max_pool=image)
        if image:
            env = GrayResize(env, frame_size)
        elif obs.dtype != np.float32:
            # Own Box: gymnasium's DtypeObservation warns about float64 bounds losing precision.
            space = gym.spaces.Box(obs.low.astype(np.float32), obs.high.astype(np.float32))
            env = gym.wrappers.TransformObservation(env, lambda o: np.asarray(o, np.float32), space)
        if max_episode_steps is not None:
            env = gym.wrappers.TimeLimit(env, max_episode_steps)
        return finish(env, seed=seed, clip_rewards=clip_rewards)

    def time_limit(self, env_id: str, settings: dict[str, Any]) -> int | None:
        if settings.get("max_episode_steps") is not None:
            return settings["max_episode_steps"]
        try:
            return gym.spec(env_id).max_episode_steps
        except gym.error.Error:
            return None
