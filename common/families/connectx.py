"""Kaggle's ConnectX against an opponent per game (the game itself: common/connectx/).

A board game: no frames to skip, rewards in {-1, 0, 1}, a legal-action mask each step and
the opponent, seat and result in the info at a game's end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym

from common.envs import EnvSignature
from common.families import Family


class ConnectXFamily(Family):
    name = "ConnectX"
    preset = "connectx"
    uses_frame_skip = False

    def matches(self, env_id: str) -> bool:
        from common.connectx import ENV_ID

        return env_id == ENV_ID

    def make(self, env_id: str, *, seed: int, frame_skip: int, max_episode_steps: int | None,
             clip_rewards: bool, frame_size: int, **extra: Any) -> gym.Env:
        from common.connectx.env import ConnectXEnv

        env = ConnectXEnv(seed)
        env.action_space.seed(seed)
        return env

    def signature(self, env_id: str, **settings: Any) -> EnvSignature:
        from common.connectx.features import N_PLANES
        from common.connectx.messages import EPISODE_EXTRAS

        return EnvSignature((N_PLANES, 6, 7), "uint8", 7, False, action_mask=True, episode_extras=EPISODE_EXTRAS)

    def time_limit(self, env_id: str, settings: dict[str, Any]) -> int | None:
        from common.connectx.game import CELLS

        return settings.get("max_episode_steps") or CELLS // 2  # a seat fills at most half the board

    def learner_hooks(self, cfg: Any, run_dir: Path, model_spec: dict[str, Any], spec_hash: str,
                      session: str, counters: dict[str, Any]) -> Any:
        from common.connectx.hooks import learner_hooks

        return learner_hooks(cfg, run_dir, model_spec, spec_hash, session, counters)

    def actor_hooks(self, env: gym.Env, model: Any, model_spec: dict[str, Any], seed: int) -> Any:
        from common.connectx.hooks import actor_hooks

        return actor_hooks(env, model, model_spec, seed)
