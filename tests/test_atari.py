"""The ALE family (common/families/atari.py) against raw ALE frames, and Atari through the
real pipeline. ale-py is a dependency of the test set-up (launch.sh installs it): a missing
ale-py fails these tests, it does not skip them."""

from __future__ import annotations

import os
import subprocess

import cv2
import gymnasium as gym
import numpy as np
import pytest

from common.envs import GrayResize, MaxAndSkip, env_signature, make_env
from common.families import env_settings, family_for
from common.families.atari import EpisodicLife, FireReset, NoopReset, register_ale
from common.protocol import RolloutSpec
from learner.episodes import EpisodeBook
from tests.conftest import ROOT, free_base_port, last_metrics, read_metrics, wait_for

register_ale()  # an EnvError here (no ale-py) fails the module: CI installs it


def raw(env_id: str = "ALE/Pong-v5", **kw) -> gym.Env:
    """ALE as it comes: one frame a step, no sticky actions, grayscale frames."""
    return gym.make(env_id, frameskip=1, repeat_action_probability=0.0, obs_type="grayscale", **kw)


class ActionLog(gym.Wrapper):
    """Records the actions that reach the env below it, and its resets."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.log: list[int | str] = []

    def step(self, action):
        self.log.append(int(action))
        return self.env.step(action)

    def reset(self, **kwargs):
        self.log.append("reset")
        return self.env.reset(**kwargs)


def unwrap_to(env: gym.Env, kind: type) -> gym.Env | None:
    while isinstance(env, gym.Wrapper):
        if isinstance(env, kind):
            return env
        env = env.env
    return None


def test_ids_of_both_styles_are_the_ale_family_with_its_preset():
    for env_id in ("ALE/Pong-v5", "PongNoFrameskip-v4", "Breakout-v4", "ALE/Breakout-v5"):
        assert family_for(env_id).name == "ALE", env_id
    for env_id in ("CartPole-v1", "MountainCar-v0", "Airstriker-Genesis-v0"):
        assert family_for(env_id).name != "ALE", env_id
    from common.config import Config

    settings = env_settings(Config(env="ALE/Pong-v5"))
    assert settings["frame_skip"] == 4 and settings["repeat_action_probability"] == 0.25
    sig = env_signature("ALE/Pong-v5", **settings)
    assert (sig.obs_shape, sig.obs_dtype, sig.n_actions, sig.lives) == ((84, 84), "uint8", 6, True)


def test_make_env_skips_in_our_wrapper_only_with_sticky_actions_and_the_minimal_set():
    env = make_env("PongNoFrameskip-v4", seed=3, frame_skip=4, repeat_action_probability=0.25)
    try:
        ale = env.unwrapped.ale
        assert env.unwrapped._frameskip == 1, "ALE's own frame skip stays 1 under our MaxAndSkip"
        assert ale.getFloat("repeat_action_probability") == pytest.approx(0.25)
        assert env.action_space.n == 6 == len(env.unwrapped.get_action_meanings())  # minimal set
        env.reset()
        before = ale.getEpisodeFrameNumber()
        obs, *_ = env.step(0)
        assert ale.getEpisodeFrameNumber() - before == 4, "one agent step is 4 emulator frames"
        assert obs.shape == (84, 84) and obs.dtype == np.uint8
    finally:
        env.close()


def test_frame_skip_sums_rewards_and_max_pools_the_last_two_raw_frames():
    ours, ref = MaxAndSkip(raw(), 4), raw()
    try:
        ours.reset(seed=5)
        ref.reset(seed=5)
        rng = np.random.default_rng(0)
        rewards = 0.0
        for _ in range(300):
            action = int(rng.integers(ours.action_space.n))
            obs, reward, term, trunc, _ = ours.step(action)
            frames, total = [], 0.0
            for _ in range(4):
                f, r, *_ = ref.step(action)
                frames.append(f)
                total += r
            np.testing.assert_array_equal(obs, np.maximum(frames[-2], frames[-1]))
            assert reward == total
            rewards += abs(total)
            assert not (term or trunc)
        assert rewards > 0, "300 steps of Pong score points: the rewards were compared"
    finally:
        ours.close()
        ref.close()


def test_make_env_resizes_the_pooled_gray_frame_to_84_with_inter_area():
    env = make_env("ALE/Pong-v5", seed=1, repeat_action_probability=0.0)
    try:
        env.reset()
        gray = unwrap_to(env, GrayResize)
        pooled, *_ = gray.env.step(0)  # below GrayResize: the max-pooled ALE grayscale frame
        assert pooled.shape == (210, 160) and pooled.dtype == np.uint8
        np.testing.assert_array_equal(gray.observation(pooled),
                                      cv2.resize(pooled, (84, 84), interpolation=cv2.INTER_AREA))
    finally:
        env.close()


def test_noop_reset_plays_1_to_30_noops_drawn_from_the_seed():
    counts = []
    for seed in range(12):
        inner = ActionLog(raw())
        env = NoopReset(inner, 30)
        env.reset(seed=seed)
        noops = [a for a in inner.log if a != "reset"]
        assert set(noops) == {0} and 1 <= len(noops) <= 30
        assert env.unwrapped.ale.getEpisodeFrameNumber() == len(noops)
        counts.append(len(noops))
        again = ActionLog(raw())
        NoopReset(again, 30).reset(seed=seed)
        assert again.log == inner.log, "the same seed gives the same start"
        env.close()
        again.env.close()
    assert len(set(counts)) > 3, f"the no-op count varies with the seed: {counts}"


def test_fire_reset_presses_fire_where_the_game_needs_it():
    breakout = make_env("ALE/Breakout-v5", seed=0)
    pacman = make_env("ALE/MsPacman-v5", seed=0)
    try:
        assert unwrap_to(breakout, FireReset) is not None
        assert unwrap_to(pacman, FireReset) is None, "MsPacman's minimal set has no FIRE"
    finally:
        breakout.close()
        pacman.close()
    inner = ActionLog(raw("ALE/Breakout-v5"))
    env = FireReset(inner)
    env.reset(seed=0)
    assert inner.log == ["reset", 1, 2]
    env.close()


def test_a_lost_life_ends_a_training_episode_and_only_the_last_ends_the_game():
    env = make_env("ALE/Breakout-v5", seed=2, repeat_action_probability=0.0)
    try:
        env.reset()
        ale = env.unwrapped.ale
        rng = np.random.default_rng(0)
        ends = []
        game_frames_at_end = []
        for _ in range(5000):
            _, _, term, trunc, info = env.step(int(rng.integers(4)))
            if term or trunc:
                ends.append((term, info["game_over"], ale.lives()))
                game_frames_at_end.append(ale.getEpisodeFrameNumber())
                env.reset()
                if info["game_over"]:
                    break
        assert ends == [(True, False, 4), (True, False, 3), (True, False, 2), (True, False, 1), (True, True, 0)]
        # after a lost life the game went on (its frame count kept growing); after the game, a new one
        assert game_frames_at_end == sorted(game_frames_at_end)
        assert ale.lives() == 5 and ale.getEpisodeFrameNumber() < game_frames_at_end[-1]
        assert unwrap_to(env, EpisodicLife) is not None
    finally:
        env.close()


def test_the_episode_book_counts_whole_games_of_lives():
    spec = RolloutSpec(8, (84, 84), "uint8", 4, 4, 4, 1e6, 20, lives=True)
    book = EpisodeBook(spec, rewards_are_returns=True)
    book.start(0, fresh=True)

    def rollout(rewards, dones, episodes):
        from common.protocol import Rollout

        T = 8
        return Rollout(actor_id=0, policy_version=0, frames=np.zeros((T + 1, 84, 84), np.uint8),
                       history=np.zeros((3, 84, 84), np.uint8), actions=np.zeros(T, np.int32),
                       behaviour_logp=np.zeros(T, np.float32), rewards=np.array(rewards, np.float32),
                       terminated=np.array(dones, bool), truncated=np.zeros(T, bool), episodes=episodes)

    life = lambda ret, n, over: {"return": ret, "length": n, "frames": 4 * n, "game_over": over}  # noqa: E731
    first = book.check(rollout([1, 0, 0, 1, 0, 0, 0, 2], [0, 0, 1, 0, 1, 0, 0, 0],
                               [life(1.0, 3, False), life(1.0, 2, False)]))
    assert first == [], "lives lost: no game ended yet"
    games = book.check(rollout([0, 0, 0, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0, 0, 0], [life(2.0, 5, True)]))
    assert [(g.ret, g.length, g.frames, g.verified) for g in games] == [(4.0, 10, 40, True)]
    # a game longer than the time limit (20 steps) is rejected, whatever its lives' lengths
    from common.protocol import ProtocolError

    book.check(rollout([0] * 8, [0, 0, 0, 0, 0, 0, 0, 1], [life(0.0, 14, False)]))
    with pytest.raises(ProtocolError, match="game length 22 is over the time limit 20"):
        book.check(rollout([0] * 8, [0, 0, 0, 0, 0, 0, 0, 1], [life(0.0, 8, True)]))


def test_breakout_lives_through_the_real_pipeline_count_whole_games(procs, tmp_path):
    """Learner and two one-process actors over real sockets, with --exploration adaptive: every
    lost life is a done flag, the learner accepts them all, its statistics are whole games and
    its arm statistics lives (the bandit's episodes; a game's lives may use different arms).
    Before the arm statistics took lives, the first lost life stopped the learner."""
    port = free_base_port()
    run = tmp_path / "run"
    procs.learner("--env", "ALE/Breakout-v5", "--unroll-length", "32", "--batch-size", "64",
                  "--epochs", "1", "--minibatches", "1", "--eval-interval", "0", "--report-interval", "1",
                  "--return-window", "5", "--exploration", "adaptive", "--bandit-arms", "0.5,0",
                  port=port, run_dir=run)
    procs.actor(port, "a0")
    procs.actor(port, "a1")
    row = wait_for(lambda: (m := last_metrics(run)).get("episodes", 0) >= 3 and m, 120, "3 Breakout games")
    assert row["rejected_messages"] == 0 and row["updates"] >= 1
    # a random Breakout game (5 lives) lasts well over 100 agent steps: games, not lives
    assert row["frames"] / 4 / row["episodes"] > 100, row
    assert row["mean_return"] is not None and row["mean_return"] >= 0
    arms = row["arms"]
    assert set(arms) == {"0:eps=0.5", "1:eps=0"}
    assert sum(a["share"] for a in arms.values()) == pytest.approx(1.0, abs=1e-3)
    # both arms pulled (untried arms first), each with the mean return of its lives
    assert all(a["share"] > 0 and a["mean_return"] is not None for a in arms.values()), arms


def test_launch_pong_through_the_real_pipeline(tmp_path):
    """./launch.sh as a new user types it, with an actor host (its emulators in their own
    processes): a few updates of ALE/Pong-v5, then a clean stop at --total-frames."""
    run = tmp_path / "pong"
    out = tmp_path / "launch.out"
    with open(out, "wb") as log:
        p = subprocess.Popen(
            [str(ROOT / "launch.sh"), "2", "--env", "ALE/Pong-v5", "--actor-mode", "host",
             "--unroll-length", "32", "--batch-size", "64", "--epochs", "1", "--minibatches", "1",
             "--total-frames", "4000", "--eval-interval", "0", "--report-interval", "1",
             "--port", str(free_base_port()), "--run-dir", str(run)],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            rc = p.wait(120)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, 9)
    text = out.read_text()
    assert rc == 0, text[-3000:]
    assert "preset atari" in text
    rows = read_metrics(run)
    assert rows[-1]["frames"] >= 4000 and rows[-1]["updates"] >= 3 and rows[-1]["rejected_messages"] == 0
    config = (run / "config.toml").read_text()
    assert "repeat_action_probability = 0.25" in config and "clip_rewards = true" in config
