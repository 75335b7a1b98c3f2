"""A sliding-window UCB bandit over exploration settings (Agent57's meta-controller, Badia et al.
2020): at each episode's start an actor picks an arm; the episode's return is the arm's reward.

Only recent episodes count, because every arm's return rises as the policy learns: the window is
the newest third of the episodes played so far, at least two per arm and at most `window`. A fixed
window longer than a run (Airstriker gives an emulator about 80 episodes in 2M frames) does not
slide, and each arm's mean then mixes in returns from when the policy was weak, which favours the
arms pulled late. Rewards are normalised by the window's spread (max - min), so the bonus means the
same in every game. An arm without a pull in the window is pulled first. Ties break by the
bandit's own seeded generator, so an actor's choices repeat with its seed.
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
        self.played = 0
        self.rng = np.random.default_rng(seed)

    @property
    def span(self) -> int:
        """Episodes the next choice looks at: the newest third of those played, at least two an arm."""
        return min(len(self.history), max(2 * self.n_arms, (self.played + 2) // 3))

    def select(self) -> int:
        counts = np.zeros(self.n_arms)
        sums = np.zeros(self.n_arms)
        recent = list(self.history)[len(self.history) - self.span:]
        for arm, reward in recent:
            counts[arm] += 1
            sums[arm] += reward
        untried = np.flatnonzero(counts == 0)
        if len(untried):
            return int(self.rng.choice(untried))
        rewards = [r for _, r in recent]
        low, spread = min(rewards), max(rewards) - min(rewards)
        means = (sums / counts - low) / spread if spread > 0 else np.zeros(self.n_arms)
        scores = means + self.bonus * np.sqrt(math.log(len(recent)) / counts)
        best = np.flatnonzero(scores >= scores.max() - 1e-12)
        return int(self.rng.choice(best))

    def update(self, arm: int, reward: float) -> None:
        if not 0 <= arm < self.n_arms:
            raise ValueError(f"arm {arm} is not in [0, {self.n_arms})")
        self.history.append((arm, float(reward)))
        self.played += 1
