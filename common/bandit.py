"""A sliding-window UCB bandit over exploration settings (Agent57's meta-controller, Badia et al.
2020): at each episode's start an actor picks an arm; the episode's return is the arm's reward.

Every arm's return rises as the policy learns, so a raw return says more about when an arm was
pulled than about the arm. The bandit scores an episode by its return minus the mean return of the
episodes just before it (the last `baseline`, whatever their arms; 2 an arm by default): what the
arm gave over its contemporaries. These relative rewards do not drift with learning, so the window
(the newest `window` episodes) can be long, and an arm that does not pay stops being pulled once its
deficit shows, where a short window on raw returns has to pull every arm again each time it leaves
the window (the fixed part of the episodes a window of 20-30 spends on 9 arms is large). Rewards are
normalised by the window's spread (max - min), so the bonus means the same in every game. An arm
without a pull in the window is pulled first. Ties break by the bandit's own seeded generator, so an
actor's choices repeat with its seed.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np


class SlidingWindowUCB:
    """`select()` the arm for the next episode; `update(arm, reward)` with its return."""

    def __init__(self, n_arms: int, *, window: int = 90, bonus: float = 0.5, seed: int = 0,
                 baseline: int | None = None):
        baseline = 2 * n_arms if baseline is None else baseline
        if n_arms < 1 or window < 1 or bonus < 0 or baseline < 1:
            raise ValueError(f"need n_arms >= 1, window >= 1, bonus >= 0, baseline >= 1; "
                             f"got {n_arms}, {window}, {bonus}, {baseline}")
        self.n_arms = n_arms
        self.bonus = bonus
        self.history: deque[tuple[int, float]] = deque(maxlen=window)  # (arm, relative reward)
        self.before: deque[float] = deque(maxlen=baseline)  # the raw returns of the last episodes
        self.rng = np.random.default_rng(seed)

    def select(self) -> int:
        counts = np.zeros(self.n_arms)
        sums = np.zeros(self.n_arms)
        recent = list(self.history)
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
        reward = float(reward)
        base = sum(self.before) / len(self.before) if self.before else reward
        self.history.append((arm, reward - base))
        self.before.append(reward)
