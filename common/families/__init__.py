"""Game families: one registry that says, for any env id, how to make its env, its signature,
its time limit, its env settings and its preset.

Callers ask ``family_for(env_id)`` and never test the id themselves. A family is a ``Family``
subclass in one module of this package plus one entry in ``FAMILIES`` (``register`` adds one
at run time, as tests do). The first family whose ``matches`` says yes wins; plain Gymnasium
matches every id, so it stays last.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym

if TYPE_CHECKING:
    from common.config import Config
    from common.envs import EnvSignature

__all__ = ["FAMILIES", "Family", "env_settings", "family_for", "register"]


class Family:
    """How one kind of game is built and described. Subclasses override what differs."""

    name: str = ""
    preset: str | None = None  # section of common/presets.toml that --preset auto picks
    uses_frame_skip: bool = True  # False: --frame-skip cannot apply, one step is one env step
    default_time_limit: int | None = None  # agent steps when --max-episode-steps is 0
    lives: bool = False  # episodes end at a lost life; each carries game_over, stats count games

    def matches(self, env_id: str) -> bool:
        raise NotImplementedError

    def make(self, env_id: str, *, seed: int, frame_skip: int, max_episode_steps: int | None,
             clip_rewards: bool, frame_size: int, **extra: Any) -> gym.Env:
        """The preprocessed env: Discrete actions, ONE frame (or a float32 vector) a step."""
        raise NotImplementedError

    def env_settings(self, cfg: Config) -> dict[str, Any]:
        """Keyword arguments of ``common.envs.make_env`` for this configuration."""
        return {
            "frame_skip": cfg.frame_skip if self.uses_frame_skip else 1,
            "max_episode_steps": cfg.max_episode_steps or self.default_time_limit,
            "clip_rewards": cfg.clip_rewards,
            "frame_size": cfg.frame_size,
            "action_set": cfg.action_set,
        }

    def signature(self, env_id: str, **settings: Any) -> EnvSignature:
        """Shapes of what ``make`` yields; by default read off a freshly made env."""
        from common.envs import EnvSignature, make_env

        env = make_env(env_id, seed=0, **settings)
        try:
            space = env.observation_space
            return EnvSignature(tuple(space.shape), space.dtype.name, int(env.action_space.n),
                                space.dtype.name == "uint8", lives=self.lives)
        finally:
            env.close()

    def time_limit(self, env_id: str, settings: dict[str, Any]) -> int | None:
        """The most agent steps an episode may take under ``settings`` (None: no limit)."""
        return settings.get("max_episode_steps")

    def preset_for(self, env_id: str) -> str | None:
        return self.preset

    def video_source(self, env: gym.Env, frame_skip: int) -> tuple[Callable[[], Any], float] | None:
        """(the RGB screen, agent steps a second) for evaluation videos; None: render()."""
        return None

    def learner_hooks(self, cfg: Config, run_dir: Path, model_spec: dict[str, Any], spec_hash: str,
                      session: str, counters: dict[str, Any]) -> Any:
        """Learner-side hooks for families that need more (two players: common/connectx/hooks.py);
        None for most. ``counters`` are a resumed run's."""
        return None

    def actor_hooks(self, env: gym.Env, model: Any, model_spec: dict[str, Any], seed: int) -> Any:
        """Actor-side hooks for families that need more (``kinds``, ``on_message``,
        ``on_new_session``); None for most."""
        return None


def _builtin() -> list[Family]:
    from common.families.atari import AtariFamily
    from common.families.connectx import ConnectXFamily
    from common.families.gym import GymFamily
    from common.families.retro import RetroFamily

    return [ConnectXFamily(), RetroFamily(), AtariFamily(), GymFamily()]


FAMILIES: list[Family] = _builtin()


def register(family: Family) -> None:
    """Add a family ahead of plain Gymnasium (which matches everything, so stays last)."""
    FAMILIES.insert(len(FAMILIES) - 1, family)


def family_for(env_id: str) -> Family:
    """The family of ``env_id``: the first in FAMILIES that matches it."""
    for family in FAMILIES:
        if family.matches(env_id):
            return family
    raise LookupError(f"no game family matches {env_id!r}")  # unreachable while gym is last


def env_settings(cfg: Config) -> dict[str, Any]:
    """``make_env``'s keyword arguments for ``cfg`` (its env's family decides)."""
    return family_for(cfg.env).env_settings(cfg)
