"""Rollouts of T steps, cut from one emulator's steps. No sockets here.

`RolloutBuilder` keeps one emulator's frame stack, the rollout in progress and its episode
statistics; whoever steps the emulator feeds it. The one-process actor (`RolloutCollector`)
steps its env and runs the policy in the same process; the actor host keeps one builder per
emulator process and feeds them from shared memory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch

from actor.exploration import AdaptiveEpsilon
from common.action_sampling import own_logp, sample_action
from common.agent import Agent
from common.framestack import FrameStack
from common.protocol import MAX_ABS_OBSERVATION, Rollout

log = logging.getLogger("actor")


@dataclass
class StepTimes:
    """Seconds spent in each part of a step, summed since the last `reset`."""

    emulate: float = 0.0
    infer: float = 0.0
    other: float = 0.0
    steps: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    def reset(self) -> None:
        self.emulate = self.infer = self.other = 0.0
        self.steps = 0
        self.extra.clear()


def bounded_observation(obs) -> np.ndarray:
    """The env's observation within the wire's bounds (float vectors clipped, images as is)."""
    obs = np.asarray(obs)
    if obs.dtype.kind == "f":
        obs = np.clip(np.nan_to_num(obs), -MAX_ABS_OBSERVATION, MAX_ABS_OBSERVATION)
    return obs


class RolloutBuilder:
    """One emulator's trajectory: `act` records the action chosen for the newest observation,
    `observe` what the emulator returned; every T steps `observe` hands back a Rollout.

    An observation after `terminated` or `truncated` is the next episode's reset frame, as the
    emulator returns it; the frame stack restarts from it (as the learner rebuilds stacks).
    Rewards beyond +-max_abs_reward (the learner rejects them) are clipped, float observations
    kept within the wire's bounds. With `mask_size` (games with legal-action masks) each
    step's mask is recorded too; `episode_keys` are the fields a game family adds to an
    episode, copied from the info at its end.
    """

    def __init__(self, first_obs: np.ndarray, *, actor_id: int, unroll_length: int, frame_stack: int,
                 frame_skip: int = 1, max_abs_reward: float = 1e6, mask_size: int = 0,
                 lives: bool = False, episode_keys: tuple[str, ...] = ()):
        first_obs = bounded_observation(first_obs)
        self.lives = lives  # episodes say whether the game ended or only a life (game_over)
        self.episode_keys = episode_keys
        self.actor_id = actor_id
        self.T = unroll_length
        self.frame_skip = frame_skip
        self.max_abs_reward = max_abs_reward
        self.mask_size = mask_size
        self.clipped_rewards = 0
        self.stack = FrameStack(frame_stack, first_obs.shape, first_obs.dtype)
        self.stack.reset(first_obs)
        self.episode_return = 0.0
        self.episode_length = 0
        self.first_episode_actions: list[int] | None = []
        self.on_first_episode: Callable[[list[int]], None] = lambda actions: None
        self.explorer: AdaptiveEpsilon | None = None  # --exploration adaptive: episodes record its arm
        self._start()

    def _start(self) -> None:
        T, stack = self.T, self.stack
        self.t = 0
        self.frames = np.empty((T + 1, *stack.buf.shape[1:]), dtype=stack.buf.dtype)
        self.frames[0] = stack.newest
        self.history = stack.history()
        self.actions = np.empty(T, dtype=np.int32)
        self.logp = np.empty(T, dtype=np.float32)
        self.own_logp = np.empty(T, dtype=np.float32)
        self.mixed = False  # a step's behaviour was a mixture: the rollout sends policy_logp
        self.rewards = np.empty(T, dtype=np.float32)
        self.terminated = np.zeros(T, dtype=bool)
        self.truncated = np.zeros(T, dtype=bool)
        self.masks = np.empty((T, self.mask_size), dtype=bool) if self.mask_size else None
        self.finals: list[np.ndarray] = []  # the observations a time limit hid, to bootstrap from
        self.episodes: list[dict[str, float]] = []
        self.policy_version = -1
        self.core_state: np.ndarray | None = None  # the recurrent state at frames[0], given by act

    def restart(self) -> None:
        """Drop the steps of the rollout in progress (made for a learner that is gone)."""
        self._start()

    def _bounded(self, reward: float) -> float:
        """A reward within +-max_abs_reward (the learner rejects rollouts beyond it)."""
        bound = self.max_abs_reward
        if -bound <= reward <= bound:
            return reward
        self.clipped_rewards += 1
        if self.clipped_rewards == 1:
            log.warning("reward %g clipped to +-%g (the learner's --max-abs-reward); further clips "
                        "are not logged", reward, bound)
        return float(np.clip(np.nan_to_num(reward), -bound, bound))

    def act(self, action: int, logp: float, policy_version: int, action_mask: np.ndarray | None = None,
            own_logp: float | None = None, core_state: np.ndarray | None = None) -> None:
        """The action chosen at step t (under `action_mask`, for games with masks); `own_logp`,
        when exploration mixed noise in, its log-prob under the unmixed policy; the recurrent
        `core_state` it was chosen from, after any reset (the rollout keeps step 0's). A rollout
        carries the oldest policy version it used."""
        t = self.t
        if t == 0 and core_state is not None:
            self.core_state = np.array(core_state, dtype=np.float32)  # a copy: the caller's moves on
        self.actions[t], self.logp[t] = action, logp
        self.own_logp[t] = logp if own_logp is None else own_logp
        self.mixed |= own_logp is not None
        if self.masks is not None:
            self.masks[t] = action_mask
        if t == 0 or policy_version < self.policy_version:
            self.policy_version = policy_version
        if self.first_episode_actions is not None:
            self.first_episode_actions.append(int(action))

    def observe(self, obs: np.ndarray, reward: float, terminated: bool, truncated: bool,
                raw_reward: float | None = None, final_obs: np.ndarray | None = None,
                episode_info: dict | None = None, game_over: bool = True) -> Rollout | None:
        """The emulator's answer to step t (after an episode's end, `obs` is the reset frame,
        `final_obs` the one a time limit hid and `episode_info` the info at the episode's end,
        which holds the `episode_keys`; `game_over` False when the end was a lost life, the game
        going on); the finished rollout after every T steps."""
        t = self.t
        obs = bounded_observation(obs)
        self.rewards[t] = self._bounded(float(reward))
        self.terminated[t], self.truncated[t] = terminated, truncated
        self.episode_return += self._bounded(float(reward if raw_reward is None else raw_reward))
        self.episode_length += 1
        if truncated and not terminated:
            if final_obs is None:
                raise ValueError("a truncated step needs the observation the time limit hid")
            self.finals.append(np.array(bounded_observation(final_obs)))  # a copy: buffers get reused
        if terminated or truncated:
            episode = {"return": self.episode_return, "length": self.episode_length,
                       "frames": self.episode_length * self.frame_skip}
            if self.episode_keys and episode_info and all(k in episode_info for k in self.episode_keys):
                episode.update({k: episode_info[k] for k in self.episode_keys})
            if self.lives:
                episode["game_over"] = bool(game_over)
            if self.explorer is not None:  # the arm this episode was played with, then the next one's
                episode["arm"] = self.explorer.arm
                self.explorer.episode_done(self.episode_return)
            self.episodes.append(episode)
            self.episode_return, self.episode_length = 0.0, 0
            if self.first_episode_actions is not None:
                self.on_first_episode(self.first_episode_actions)
                self.first_episode_actions = None
            self.stack.reset(obs)
        else:
            self.stack.push(obs)
        self.t = t = t + 1
        self.frames[t] = self.stack.newest
        if t < self.T:
            return None
        rollout = Rollout(self.actor_id, self.policy_version, self.frames, self.history, self.actions,
                          self.logp, self.rewards, self.terminated, self.truncated, self.episodes,
                          final_frames=np.stack(self.finals) if self.finals else None, action_mask=self.masks,
                          policy_logp=self.own_logp if self.mixed else None, core_state=self.core_state)
        self._start()
        return rollout


class RolloutCollector:
    """The one-process actor's loop: steps one env with the policy in the same process."""

    def __init__(self, env: gym.Env, *, actor_id: int, seed: int, unroll_length: int,
                 frame_stack: int, frame_skip: int = 1, epsilon: float = 0.0,
                 max_abs_reward: float = 1e6, lives: bool = False, explorer: AdaptiveEpsilon | None = None):
        self.env = env
        self._epsilon = epsilon
        self.rng = np.random.default_rng(seed)
        obs, info = env.reset(seed=seed)
        # envs with legal-action masks give one in every info; None for the others
        self.mask: np.ndarray | None = info.get("action_mask")
        self.builder = RolloutBuilder(obs, actor_id=actor_id, unroll_length=unroll_length,
                                      frame_stack=frame_stack, frame_skip=frame_skip,
                                      max_abs_reward=max_abs_reward, lives=lives,
                                      mask_size=0 if self.mask is None else len(self.mask),
                                      episode_keys=tuple(getattr(env.unwrapped, "episode_keys", ())))
        self.builder.explorer = explorer
        self.times = StepTimes()
        self.state: torch.Tensor | None = None  # the policy's recurrent state (made on the first act)
        self.episode_start = True  # the next observation opens an episode: the state starts afresh

    @property
    def epsilon(self) -> float:
        """This step's epsilon: the fixed one, or the arm the bandit chose for this episode."""
        explorer = self.builder.explorer
        return self._epsilon if explorer is None else explorer.epsilon

    @property
    def actor_id(self) -> int:
        return self.builder.actor_id

    @actor_id.setter
    def actor_id(self, value: int) -> None:
        self.builder.actor_id = value

    @property
    def on_first_episode(self) -> Callable[[list[int]], None]:
        return self.builder.on_first_episode

    @on_first_episode.setter
    def on_first_episode(self, hook: Callable[[list[int]], None]) -> None:
        self.builder.on_first_episode = hook

    @property
    def clipped_rewards(self) -> int:
        return self.builder.clipped_rewards

    def _act(self, model: Agent) -> tuple[int, float, float | None, np.ndarray]:
        """(action, behaviour log-prob, log-prob under the unmixed policy when epsilon mixes, the
        state it was chosen from) through the agent contract."""
        obs = torch.from_numpy(self.builder.stack.buf).unsqueeze(0)
        if self.state is None or self.episode_start:
            self.state = model.initial_state(1, "cpu")  # reset on done
        state_in = self.state
        with torch.inference_mode():
            logits, _, self.state = model.step(obs, state_in, torch.tensor([self.episode_start]))
        self.episode_start = False
        epsilon = self.epsilon
        action, logp = sample_action(logits[0], self.rng, epsilon=epsilon, action_mask=self.mask)
        if epsilon <= 0.0:
            return action, logp, None, state_in[0].numpy()
        mask = None if self.mask is None else self.mask[None]
        return action, logp, float(own_logp(logits, np.array([action]), mask)[0]), state_in[0].numpy()

    def collect(self, model: Agent, policy_version: int) -> Rollout:
        b = self.builder
        clock = time.perf_counter
        while True:
            t0 = clock()
            action, logp, own, state = self._act(model)
            b.act(action, logp, policy_version, self.mask, own, state)
            t1 = clock()
            obs, reward, term, trunc, info = self.env.step(action)
            t2 = clock()
            final, step_info = None, info
            if term or trunc:
                self.episode_start = True
                final = obs if trunc and not term else None
                obs, info = self.env.reset()
            if self.mask is not None:
                self.mask = info["action_mask"]
            rollout = b.observe(obs, reward, term, trunc, step_info.get("raw_reward", reward), final_obs=final,
                                episode_info=step_info, game_over=step_info.get("game_over", True))
            t3 = clock()
            self.times.infer += t1 - t0
            self.times.emulate += t2 - t1
            self.times.other += t3 - t2
            if rollout is not None:
                self.times.steps += b.T
                return rollout
