"""Atari 2600 games through the Arcade Learning Environment (ale-py, ROMs in its wheel).

Ids: ``ALE/Pong-v5`` and the older ``PongNoFrameskip-v4`` / ``Pong-v4`` styles. Whatever the
id says, the preprocessing is the literature's (Machado et al. 2018; CleanRL's ppo_atari.py
and SB3's AtariWrapper), innermost first::

    AtariEnv      frameskip=1, full_action_space=False (the minimal action set), grayscale
                  frames, repeat_action_probability (sticky actions, 0.25 as v5 defines),
                  max_num_frames_per_episode = time limit x frame skip (a whole game)
    NoopReset     1..30 no-ops at the start of every game
    MaxAndSkip    repeat each action frame_skip (4) frames, max over the last two
    EpisodicLife  a lost life ends the training episode (terminated); info["game_over"]
                  says whether the game ended too, so statistics count whole games
    FireReset     press FIRE after every reset, for games that wait for it
    GrayResize    84 x 84
    ClipReward    sign(reward) with --clip-rewards (the atari preset), the game's in info
The actor stacks 4 frames.
"""

from __future__ import annotations

import re
from typing import Any

import gymnasium as gym

from common.envs import EnvError, GrayResize, MaxAndSkip, finish
from common.families import Family

NOOP_MAX = 30  # most no-ops at a game's start (Machado et al. 2018; CleanRL)
_ALE_ID = re.compile(r"^(ALE/[A-Za-z0-9]+-v5|[A-Z][A-Za-z0-9]*-v[04])$")


def register_ale() -> None:
    """Makes Gymnasium know the ALE ids; EnvError when ale-py is not installed."""
    try:
        import ale_py
    except ImportError:
        raise EnvError("Atari needs ale-py: pip install 'retrofleet[atari]' "
                       "(./launch.sh installs it)") from None
    gym.register_envs(ale_py)


class NoopReset(gym.Wrapper):
    """A game starts after 1..noop_max no-op frames, drawn from the env's seeded generator."""

    def __init__(self, env: gym.Env, noop_max: int = NOOP_MAX):
        super().__init__(env)
        self.noop_max = noop_max
        if env.unwrapped.get_action_meanings()[0] != "NOOP":
            raise EnvError(f"{env.spec.id if env.spec else env}: action 0 is not NOOP")

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        obs, info = self.env.reset(**kwargs)
        for _ in range(int(self.env.unwrapped.np_random.integers(1, self.noop_max + 1))):
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset()
        return obs, info


class EpisodicLife(gym.Wrapper):
    """A lost life ends the training episode; the game goes on at the next reset.

    Every step that ends an episode carries info["game_over"]: False for a lost life, True
    when the game itself ended (or was cut by its time limit).
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.lives = 0
        self.game_over = True

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = terminated or truncated
        lives = self.env.unwrapped.ale.lives()
        if 0 < lives < self.lives:
            terminated = True
        self.lives = lives
        if terminated or truncated:
            info["game_over"] = self.game_over
        return obs, reward, terminated, truncated, info

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        if self.game_over:
            obs, info = self.env.reset(**kwargs)
        else:  # after a lost life: one no-op frame, and the game continues
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        self.game_over = False
        self.lives = self.env.unwrapped.ale.lives()
        return obs, info


class FireReset(gym.Wrapper):
    """Presses FIRE (then action 2) after each reset, for games that wait for it (Breakout)."""

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        self.env.reset(**kwargs)
        obs, _, terminated, truncated, info = self.env.step(1)
        if terminated or truncated:
            self.env.reset(**kwargs)
        obs, _, terminated, truncated, info = self.env.step(2)
        if terminated or truncated:
            obs, info = self.env.reset(**kwargs)
        return obs, info


def needs_fire(env: gym.Env) -> bool:
    meanings = env.unwrapped.get_action_meanings()
    return len(meanings) >= 3 and meanings[1] == "FIRE"


class AtariFamily(Family):
    name = "ALE"
    preset = "atari"
    default_time_limit = 27_000  # agent steps: ALE v5's 108,000 frames at frame skip 4
    lives = True

    def matches(self, env_id: str) -> bool:
        if env_id.startswith("ALE/"):
            return True  # make() says so in one line when ale-py is missing
        if not _ALE_ID.match(env_id):
            return False
        try:
            register_ale()
            return str(gym.spec(env_id).entry_point).startswith("ale_py")
        except (EnvError, gym.error.Error):
            return False

    def env_settings(self, cfg: Any) -> dict[str, Any]:
        return {**super().env_settings(cfg), "repeat_action_probability": cfg.repeat_action_probability}

    def make(self, env_id: str, *, seed: int, frame_skip: int, max_episode_steps: int | None,
             clip_rewards: bool, frame_size: int, repeat_action_probability: float = 0.25,
             **extra: Any) -> gym.Env:
        register_ale()
        if not _ALE_ID.match(env_id):
            raise EnvError(f"{env_id!r} is not an ALE game id (ALE/Pong-v5 or PongNoFrameskip-v4)")
        frames = max_episode_steps * frame_skip if max_episode_steps is not None else None
        try:
            env = gym.make(env_id, frameskip=1, repeat_action_probability=repeat_action_probability,
                           full_action_space=False, obs_type="grayscale",
                           max_num_frames_per_episode=frames)
        except gym.error.Error as e:
            raise EnvError(f"cannot make {env_id!r}: {str(e).strip().splitlines()[0]}") from e
        env = NoopReset(env, NOOP_MAX)
        env = MaxAndSkip(env, frame_skip) if frame_skip > 1 else env
        fire = needs_fire(env)
        env = EpisodicLife(env)
        env = FireReset(env) if fire else env
        env = GrayResize(env, frame_size)
        return finish(env, seed=seed, clip_rewards=clip_rewards)
