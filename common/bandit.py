"""A sliding-window UCB bandit over exploration settings (Agent57's meta-controller, Badia et al.
2020): at each episode's start an actor picks an arm; the episode's return is the arm's reward.

Only the last `window` episodes count (the best arm changes as the policy learns); rewards are
normalised by the window's spread (max - min), so the bonus means the same in every game. An arm
without a pull in the window is pulled first. Ties break by the bandit's own seeded generator,
so an actor's choices repeat with its seed.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np


class SlidingWindowUCB:
    """`select()` the arm for the next episode; `update(arm, reward)` with its return."""

    def __init__(self, n_arms: int, *, window: int = 90, bonus: float = 0.5, seed: int = 0):
        if n_arms < 1 or window < 1 or bonus < 0:
            raise ValueError(f"need n_arms >= 1, window >= 1, bonus >= 0; got {n_arms}, {window}, {bonus}")
        self.n_arms = n_arms
        self.bonus = bonus
        self.history: deque[tuple[int, float]] = deque(maxlen=window)
        self.rng = np.random.default_rng(seed)

    def select(self) -> int:
        counts = np.zeros(self.n_arms)
        sums = np.zeros(self.n_arms)
        for arm, reward in self.history:
            counts[arm] += 1
            sums[arm] += reward
        untried = np.flatnonzero(counts == 0)
        if len(untried):
            return int(self.rng.choice(untried))
        rewards = [r for _, r in self.history]
        low, spread = min(rewards), max(rewards) - min(rewards)
        means = (sums / counts - low) / spread if spread > 0 else np.zeros(self.n_arms)
        scores = means + self.bonus * np.sqrt(math.log(len(self.history)) / counts)
        best = np.flatnonzero(scores >= scores.max() - 1e-12)
        return int(self.rng.choice(best))

    def update(self, arm: int, reward: float) -> None:
        if not 0 <= arm < self.n_arms:
            raise ValueError(f"arm {arm} is not in [0, {self.n_arms})")
        self.history.append((arm, float(reward)))
