"""Rollouts -> time-major [T, B] arrays, with the policy-lag filter. No sockets, no torch."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from common.framestack import rebuild_stacks
from common.protocol import Rollout


@dataclass
class Batch:
    """Time-major training data; obs has T+1 steps (the last one bootstraps)."""

    obs: np.ndarray  # [T+1, B, stack, *frame_shape]
    actions: np.ndarray  # [T, B] int64
    behaviour_logp: np.ndarray  # [T, B] float32
    rewards: np.ndarray  # [T, B] float32
    dones: np.ndarray  # [T, B] bool (terminated or truncated)
    lags: np.ndarray  # [B] policy versions between the data and the learner

    @property
    def transitions(self) -> int:
        return self.actions.size


def collate(rollouts: list[Rollout], version: int) -> Batch:
    """Stack rollouts along B, rebuilding every step's frame stack from single frames."""
    dones = [r.terminated | r.truncated for r in rollouts]
    obs = np.stack([rebuild_stacks(r.history, r.frames, d) for r, d in zip(rollouts, dones, strict=True)], axis=1)
    return Batch(
        obs=obs,
        actions=np.stack([r.actions for r in rollouts], axis=1).astype(np.int64),
        behaviour_logp=np.stack([r.behaviour_logp for r in rollouts], axis=1),
        rewards=np.stack([r.rewards for r in rollouts], axis=1),
        dones=np.stack(dones, axis=1),
        lags=np.array([version - r.policy_version for r in rollouts], dtype=np.int64),
    )


class Batcher:
    """Buffers rollouts until a batch is ready; drops those over `max_policy_lag`."""

    def __init__(self, rollouts_per_batch: int, max_policy_lag: int, capacity: int | None = None):
        self.rollouts_per_batch = rollouts_per_batch
        self.max_policy_lag = max_policy_lag
        self.capacity = capacity or 2 * rollouts_per_batch
        self.pending: deque[Rollout] = deque()
        self.dropped_stale = 0

    def _fresh(self, r: Rollout, version: int) -> bool:
        if version - r.policy_version > self.max_policy_lag:
            self.dropped_stale += 1
            return False
        return True

    def add(self, r: Rollout, version: int) -> bool:
        """Buffer a rollout; False (and counted) when it is already too old."""
        if not self._fresh(r, version):
            return False
        self.pending.append(r)
        return True

    @property
    def full(self) -> bool:
        return len(self.pending) >= self.capacity

    def ready(self) -> bool:
        return len(self.pending) >= self.rollouts_per_batch

    def take(self, version: int) -> Batch | None:
        """The oldest full batch of fresh rollouts, or None when there is not enough."""
        self.pending = deque(r for r in self.pending if self._fresh(r, version))
        if not self.ready():
            return None
        chosen = [self.pending.popleft() for _ in range(self.rollouts_per_batch)]
        return collate(chosen, version)
