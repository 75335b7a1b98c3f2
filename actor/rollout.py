"""Collect `unroll_length` steps from one environment with one policy. No sockets here."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from common.framestack import FrameStack
from common.policy import sample_action
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


class RolloutCollector:
    """Steps one env with a policy, keeps the frame stack, and cuts rollouts of T steps."""

    def __init__(self, env: gym.Env, *, actor_id: int, seed: int, unroll_length: int,
                 frame_stack: int, frame_skip: int = 1, epsilon: float = 0.0,
                 max_abs_reward: float = 1e6):
        self.env = env
        self.actor_id = actor_id
        self.T = unroll_length
        self.frame_skip = frame_skip
        self.epsilon = epsilon
        self.max_abs_reward = max_abs_reward
        self.clipped_rewards = 0
        self.rng = np.random.default_rng(seed)
        obs, info = env.reset(seed=seed)
        obs = self._observation(obs)
        # envs with legal-action masks (ConnectX) give one in every info; None for the others
        self.mask: np.ndarray | None = info.get("action_mask")
        self.stack = FrameStack(frame_stack, obs.shape, obs.dtype)
        self.stack.reset(obs)
        self.episode_return = 0.0
        self.episode_length = 0
        self.times = StepTimes()
        self.first_episode_actions: list[int] | None = []

    def _act(self, model: nn.Module) -> tuple[int, float]:
        obs = torch.from_numpy(self.stack.buf).unsqueeze(0)
        with torch.inference_mode():
            logits = model.policy_logits(obs)
        return sample_action(logits[0], self.rng, epsilon=self.epsilon, action_mask=self.mask)

    @staticmethod
    def _observation(obs) -> np.ndarray:
        """The env's observation within the wire's bounds (float vectors clipped, images as is)."""
        obs = np.asarray(obs)
        if obs.dtype.kind == "f":
            obs = np.clip(np.nan_to_num(obs), -MAX_ABS_OBSERVATION, MAX_ABS_OBSERVATION)
        return obs

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

    def collect(self, model: nn.Module, policy_version: int) -> Rollout:
        T, stack = self.T, self.stack
        frames = np.empty((T + 1, *stack.buf.shape[1:]), dtype=stack.buf.dtype)
        history = stack.history()
        actions = np.empty(T, dtype=np.int32)
        logp = np.empty(T, dtype=np.float32)
        rewards = np.empty(T, dtype=np.float32)
        terminated = np.zeros(T, dtype=bool)
        truncated = np.zeros(T, dtype=bool)
        finals = []  # the observation a time limit hid, for the learner to bootstrap from
        masks = None if self.mask is None else np.empty((T, len(self.mask)), dtype=bool)
        episodes = []
        clock = time.perf_counter
        for t in range(T):
            t0 = clock()
            frames[t] = stack.newest
            if masks is not None:
                masks[t] = self.mask
            actions[t], logp[t] = self._act(model)
            t1 = clock()
            obs, reward, term, trunc, info = self.env.step(int(actions[t]))
            t2 = clock()
            obs = self._observation(obs)
            rewards[t] = self._bounded(float(reward))
            terminated[t], truncated[t] = term, trunc
            self.episode_return += self._bounded(float(info.get("raw_reward", reward)))
            self.episode_length += 1
            if self.first_episode_actions is not None:
                self.first_episode_actions.append(int(actions[t]))
            if trunc and not term:
                finals.append(np.array(obs))  # a copy: the env may reuse its buffer
            if term or trunc:
                episode = {"return": self.episode_return, "length": self.episode_length,
                           "frames": self.episode_length * self.frame_skip}
                if "result" in info:  # two-player games: who it played, from which seat, how it went
                    episode.update(opponent=info["opponent"], seat=info["seat"], result=info["result"])
                episodes.append(episode)
                self.episode_return, self.episode_length = 0.0, 0
                if self.first_episode_actions is not None:
                    self.on_first_episode(self.first_episode_actions)
                    self.first_episode_actions = None
                obs, info = self.env.reset()
                stack.reset(self._observation(obs))
            else:
                stack.push(obs)
            if masks is not None:
                self.mask = info["action_mask"]
            t3 = clock()
            self.times.infer += t1 - t0
            self.times.emulate += t2 - t1
            self.times.other += t3 - t2
        self.times.steps += T
        frames[T] = stack.newest
        final_frames = np.stack(finals) if finals else None
        return Rollout(self.actor_id, policy_version, frames, history, actions, logp, rewards,
                       terminated, truncated, episodes, final_frames=final_frames, action_mask=masks)

    def on_first_episode(self, actions: list[int]) -> None:
        """Hook: called once with the action sequence of the first episode."""
