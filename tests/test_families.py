"""The game-family registry (common/families/): every caller asks it, so a new family is one
module and one registry entry. This module is that module for a toy family, and shows the
config, the preset, make_env, the signature, the time limit and the learner's specs follow."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from common import envs
from common.config import Config, dump_toml, resolve
from common.families import FAMILIES, Family, env_settings, family_for, register
from learner.__main__ import train_parser


class Countdown(gym.Env):
    """A 5-step game: observation the steps left, reward 1 for action 1."""

    observation_space = gym.spaces.Box(0.0, 5.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.left = 5
        return np.array([self.left], np.float32), {}

    def step(self, action):
        self.left -= 1
        return np.array([self.left], np.float32), float(action == 1), self.left == 0, False, {}


class ToyFamily(Family):
    """A family as a new module would add it: its ids, its env, its preset, no frame skip."""

    name = "toy"
    preset = "classic-control"
    uses_frame_skip = False

    def matches(self, env_id: str) -> bool:
        return env_id.startswith("Toy/")

    def make(self, env_id: str, *, seed: int, frame_skip: int, max_episode_steps: int | None,
             clip_rewards: bool, frame_size: int, **extra: Any) -> gym.Env:
        return envs.finish(Countdown(), seed=seed, clip_rewards=clip_rewards)

    def time_limit(self, env_id: str, settings: dict[str, Any]) -> int | None:
        return 5


@pytest.fixture
def toy():
    family = ToyFamily()
    register(family)
    try:
        yield family
    finally:
        FAMILIES.remove(family)


def cfg_of(*argv: str) -> Config:
    return resolve(train_parser().parse_args(list(argv)), None)


def test_the_builtin_families_and_their_presets():
    cases = {"Airstriker-Genesis-v0": ("stable-retro", "retro"), "ALE/Pong-v5": ("ALE", "atari"),
             "connectx": ("ConnectX", "connectx"), "CartPole-v1": ("Gymnasium", "classic-control"),
             "Acrobot-v1": ("Gymnasium", "none")}
    for env_id, (family, preset) in cases.items():
        assert family_for(env_id).name == family, env_id
        assert cfg_of("--env", env_id).preset == preset, env_id
    assert FAMILIES[-1].name == "Gymnasium", "the fallback stays last"


def test_a_new_family_is_one_module_and_one_entry(toy):
    assert family_for("Toy/Countdown") is toy and family_for("CartPole-v1") is not toy
    cfg = cfg_of("--env", "Toy/Countdown")
    assert cfg.preset == "classic-control" and cfg.batch_size == 256, "its preset, chosen by auto"
    settings = env_settings(cfg)
    env = envs.make_env(cfg.env, seed=3, **settings)
    obs, _ = env.reset()
    total, done = 0.0, False
    while not done:
        obs, reward, term, trunc, _ = env.step(1)
        total, done = total + reward, term or trunc
    assert total == 5.0
    sig = envs.env_signature(cfg.env, **settings)
    assert (sig.obs_shape, sig.obs_dtype, sig.n_actions, sig.is_image) == ((1,), "float32", 2, False)
    assert envs.time_limit(cfg.env, settings) == 5
    from learner.server import specs

    _, model, spec = specs(cfg)  # what the learner agrees with its actors
    assert model["kind"] == "mlp" and spec.max_episode_steps == 5 and spec.frame_skip == 1


def test_frame_skip_where_a_family_cannot_use_it_is_one_line_and_1_is_recorded(toy, capsys):
    for env_id in ("CartPole-v1", "connectx", "Toy/Countdown"):
        cfg = cfg_of("--env", env_id, "--frame-skip", "4")
        err = capsys.readouterr().err
        assert cfg.frame_skip == 1 and "frame_skip = 1\n" in dump_toml(cfg)
        assert err.count("\n") == 1 and f"--frame-skip 4 does not apply to {env_id}" in err, err
    cfg_of("--env", "CartPole-v1")  # not given: nothing to say
    cfg_of("--env", "ALE/Pong-v5", "--frame-skip", "2")  # used: nothing to say
    assert capsys.readouterr().err == ""
    assert cfg_of("--env", "ALE/Pong-v5", "--frame-skip", "2").frame_skip == 2

