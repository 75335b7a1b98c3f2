"""Tests for common/envs.py against the real stable-retro emulator and real Gymnasium envs.

stable-retro allows one emulator per process, so every retro env is closed in a finally block
(through ``_retro``) before the next one is made.
"""

from __future__ import annotations

import contextlib

import cv2
import gymnasium as gym
import numpy as np
import pytest
import stable_retro

from common.envs import (
    EnvError,
    EnvSignature,
    GrayResize,
    MaxAndSkip,
    env_signature,
    make_env,
)
from common.families.retro import BUTTON_SETS, is_retro_game
from common.families.retro import button_set as _button_set

AIR = "Airstriker-Genesis-v0"
FIRE = BUTTON_SETS["Genesis"].index(["B"])
NOOP = BUTTON_SETS["Genesis"].index([])


@contextlib.contextmanager
def _retro(**kwargs):
    env = make_env(AIR, **{"seed": 0, **kwargs})
    try:
        yield env
    finally:
        env.close()


# --------------------------------------------------------------------------- button sets


def test_button_sets_use_real_buttons_and_are_small():
    for system in ("Genesis", "Nes", "Snes", "Atari2600", "PCEngine", "GameBoy", "Sms"):
        combos = BUTTON_SETS[system]
        buttons = stable_retro.get_system_info(system)["buttons"]
        assert 8 <= len(combos) <= 12 and combos[0] == []
        assert len({tuple(c) for c in combos}) == len(combos)  # no duplicate actions
        for combo in combos:
            assert set(combo) <= set(buttons) - {"START", "SELECT", "MODE"}, (system, combo)


def test_unknown_console_falls_back_to_single_buttons_without_start():
    combos = _button_set("N64", ["A", "B", None, "START", "UP"])
    assert combos == [[], ["A"], ["B"], ["UP"]]


def test_is_retro_game():
    assert is_retro_game(AIR)
    assert is_retro_game("Jackal-Nes-v0")  # known to stable-retro even without its ROM
    assert not is_retro_game("CartPole-v1")
    assert not is_retro_game("Nope-v0")


# --------------------------------------------------------------------------- retro path


def test_airstriker_spaces_and_signature():
    with _retro() as env:
        obs, _ = env.reset()
        assert obs.shape == (84, 84) and obs.dtype == np.uint8
        obs, reward, terminated, truncated, info = env.step(FIRE)
        assert obs.shape == (84, 84) and obs.dtype == np.uint8
        assert isinstance(reward, float) and "score" in info
        assert env.action_space == gym.spaces.Discrete(len(BUTTON_SETS["Genesis"]))
        assert env.observation_space == gym.spaces.Box(0, 255, (84, 84), np.uint8)
        assert env.unwrapped.system == "Genesis"
    sig = env_signature(AIR)
    assert sig == EnvSignature((84, 84), "uint8", len(BUTTON_SETS["Genesis"]), True)
    with _retro(frame_size=64) as env:  # env_signature made no emulator, so this one works
        assert env.reset()[0].shape == (64, 64) == env_signature(AIR, frame_size=64).obs_shape


def test_step_equals_four_raw_frames_maxed_grayed_resized():
    combo = ["RIGHT", "B"]
    actions = [BUTTON_SETS["Genesis"].index(combo), NOOP, FIRE]
    with _retro(max_episode_steps=None) as env:
        raw_step = env.unwrapped.step
        calls = []
        env.unwrapped.step = lambda a: calls.append(a.copy()) or raw_step(a)
        env.reset()
        got = [env.step(a)[:2] for a in actions]
    assert len(calls) == 4 * len(actions)  # frame skip 4: four emulator frames per agent step
    buttons = stable_retro.get_system_info("Genesis")["buttons"]
    assert [buttons[i] for i in np.flatnonzero(calls[0])] == ["B", "RIGHT"]

    raw = stable_retro.make(AIR, render_mode=None)
    try:
        raw.reset()
        for (obs, reward), pressed in zip(got, calls[::4], strict=True):
            frames, total = [], 0.0
            for _ in range(4):
                frame, r, *_ = raw.step(pressed)
                frames.append(frame)
                total += r
            gray = cv2.cvtColor(np.maximum(frames[-2], frames[-1]), cv2.COLOR_RGB2GRAY)
            want = cv2.resize(gray, (84, 84), interpolation=cv2.INTER_AREA)
            np.testing.assert_array_equal(obs, want)
            assert reward == total
    finally:
        raw.close()


def test_same_seed_and_actions_give_identical_observations():
    actions = np.random.default_rng(1).integers(0, len(BUTTON_SETS["Genesis"]), 60)
    runs = []
    for _ in range(2):
        with _retro(seed=7) as env:
            obs = [env.reset()[0]] + [env.step(int(a))[0] for a in actions]
            runs.append((np.stack(obs), [env.action_space.sample() for _ in range(5)]))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]  # action_space is seeded too
    assert len({o.tobytes() for o in runs[0][0]}) > 1  # the screen actually changed


def test_reward_clipping_gives_signs():
    # Airstriker fires on a B press, not while B is held, so alternate fire and no-op.
    with _retro(clip_rewards=True, max_episode_steps=None) as env:
        env.reset()
        steps = [env.step(FIRE if i % 2 == 0 else NOOP) for i in range(80)]
    rewards = [s[1] for s in steps]
    assert set(rewards) <= {-1.0, 0.0, 1.0}
    assert 1.0 in rewards  # the first kill scores 20 raw points around step 40
    raw = [s[4]["raw_reward"] for s in steps]
    assert max(raw) == 20 and [r > 0 for r in raw] == [r > 0 for r in rewards]


def test_time_limit_counts_agent_steps():
    with _retro(max_episode_steps=5) as env:
        env.reset()
        truncated = [env.step(NOOP)[3] for _ in range(5)]
    assert truncated == [False] * 4 + [True]


def test_rom_not_imported_is_one_line_error():
    for call in (make_env, env_signature):
        with pytest.raises(EnvError) as err:
            call("Jackal-Nes-v0", seed=0)
        msg = str(err.value)
        assert "\n" not in msg and "Jackal-Nes-v0" in msg
        assert "python -m stable_retro.import" in msg


def test_unsupported_action_set():
    with pytest.raises(EnvError, match="action_set"):
        make_env(AIR, seed=0, action_set="full")


# --------------------------------------------------------------------------- wrappers (fakes)


class _FrameEnv(gym.Env):
    """Emits frame k filled with a pattern so that max-pooling is checkable; ends at `end`."""

    observation_space = gym.spaces.Box(0, 255, (2, 3, 3), np.uint8)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, end: int | None = None):
        self.end, self.t = end, 0

    def frame(self, k: int) -> np.ndarray:
        f = np.zeros((2, 3, 3), np.uint8)
        f[k % 2] = 10 * k  # alternate rows so that max(k-1, k) differs from both frames
        return f

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.frame(0), {}

    def step(self, action):
        self.t += 1
        return self.frame(self.t), float(self.t), self.t == self.end, False, {"t": self.t}


def test_max_and_skip_maxes_last_two_frames_and_sums_rewards():
    env = MaxAndSkip(_FrameEnv(), 4)
    env.reset()
    obs, reward, terminated, _, info = env.step(0)
    np.testing.assert_array_equal(obs, np.maximum(env.env.frame(3), env.env.frame(4)))
    assert (reward, terminated, info["t"]) == (1 + 2 + 3 + 4, False, 4)
    obs, reward, *_ = env.step(0)
    np.testing.assert_array_equal(obs, np.maximum(env.env.frame(7), env.env.frame(8)))
    assert reward == 5 + 6 + 7 + 8


@pytest.mark.parametrize("end, want_frames", [(1, [1]), (3, [2, 3])])
def test_max_and_skip_stops_at_termination(end, want_frames):
    env = MaxAndSkip(_FrameEnv(end=end), 4)
    env.reset()
    obs, reward, terminated, _, info = env.step(0)
    assert terminated and info["t"] == end and reward == sum(range(1, end + 1))
    np.testing.assert_array_equal(obs, np.max([env.env.frame(k) for k in want_frames], axis=0))


def test_max_and_skip_without_pooling_returns_last_frame():
    env = MaxAndSkip(_FrameEnv(), 3, max_pool=False)
    env.reset()
    np.testing.assert_array_equal(env.step(0)[0], env.env.frame(3))


def test_gray_resize_single_channel():
    class OneChannel(_FrameEnv):
        observation_space = gym.spaces.Box(0, 255, (8, 8, 1), np.uint8)

        def frame(self, k):
            return np.full((8, 8, 1), k, np.uint8)

    env = GrayResize(OneChannel(), 4)
    env.reset()
    obs = env.step(0)[0]
    assert obs.shape == (4, 4) and obs.dtype == np.uint8 and (obs == 1).all()


# --------------------------------------------------------------------------- Gymnasium path


def test_cartpole():
    env = make_env("CartPole-v1", seed=3, frame_skip=1, max_episode_steps=None)
    try:
        obs, _ = env.reset()
        assert obs.shape == (4,) and obs.dtype == np.float32
        assert env.action_space == gym.spaces.Discrete(2)
        np.testing.assert_array_equal(obs, gym.make("CartPole-v1").reset(seed=3)[0])
        obs, *_ = env.step(0)
        assert obs.dtype == np.float32
        assert env.spec.max_episode_steps == 500  # registered limit kept
    finally:
        env.close()
    assert env_signature("CartPole-v1", frame_skip=1, max_episode_steps=None) == EnvSignature(
        (4,), "float32", 2, False
    )


def test_cartpole_explicit_limit_replaces_registered_one():
    env = make_env("CartPole-v1", seed=0, frame_skip=1, max_episode_steps=3)
    env.reset()
    assert [env.step(i % 2)[3] for i in range(3)] == [False, False, True]


def test_unknown_id_and_continuous_actions_raise():
    with pytest.raises(EnvError, match="NoSuchGame-v0") as err:
        make_env("NoSuchGame-v0", seed=0)
    assert "\n" not in str(err.value)
    with pytest.raises(EnvError, match="only discrete action spaces are supported"):
        make_env("Pendulum-v1", seed=0, frame_skip=1, max_episode_steps=None)
    with pytest.raises(EnvError, match="only discrete action spaces are supported"):
        env_signature("Pendulum-v1", frame_skip=1)


class _ImageEnv(_FrameEnv):
    observation_space = gym.spaces.Box(0, 255, (96, 128, 3), np.uint8)

    def frame(self, k):
        return np.full((96, 128, 3), k, np.uint8)


class _Float64Env(_FrameEnv):
    observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float64)

    def frame(self, k):
        return np.full(3, k / 10, np.float64)


gym.register("RetrofleetTest/Image-v0", entry_point=_ImageEnv)
gym.register("RetrofleetTest/Float64-v0", entry_point=_Float64Env)


def test_gymnasium_image_and_float64_observations():
    env = make_env("RetrofleetTest/Image-v0", seed=0, frame_skip=2)
    env.reset()
    obs = env.step(0)[0]
    assert obs.shape == (84, 84) and obs.dtype == np.uint8 and (obs == 2).all()
    assert env_signature("RetrofleetTest/Image-v0") == EnvSignature((84, 84), "uint8", 2, True)
    env = make_env("RetrofleetTest/Float64-v0", seed=0, frame_skip=2)
    env.reset()
    obs = env.step(0)[0]
    assert obs.dtype == np.float32 and np.allclose(obs, 0.2)  # last frame, not a max
    assert env_signature("RetrofleetTest/Float64-v0").obs_dtype == "float32"
