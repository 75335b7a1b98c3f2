"""--exploration adaptive on the actor: a bandit per emulator picks each episode's epsilon.

The welcome's `exploration` settings name the arms (epsilons), the window and the UCB bonus; the
bandit is seeded from the actor's seed, so in sync mode a run repeats its choices.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from common.bandit import SlidingWindowUCB

if TYPE_CHECKING:
    from common.runspec import Exploration


class AdaptiveEpsilon:
    """`arm` and `epsilon` for the episode in progress; `episode_done(ret)` picks the next one."""

    def __init__(self, settings: dict[str, Any], seed: int):
        self.arms = tuple(float(a) for a in settings["arms"])
        # a stream apart from the action sampler's (which the same seed also starts)
        self.bandit = SlidingWindowUCB(len(self.arms), window=int(settings["window"]),
                                       bonus=float(settings["bonus"]),
                                       seed=int(np.random.SeedSequence([seed, 22]).generate_state(1)[0]))
        self.arm = self.bandit.select()

    @property
    def epsilon(self) -> float:
        return self.arms[self.arm]

    def episode_done(self, ret: float) -> None:
        self.bandit.update(self.arm, ret)
        self.arm = self.bandit.select()


def explorer(exploration: Exploration | None, seed: int) -> AdaptiveEpsilon | None:
    """The run spec's adaptive exploration for an actor of `seed`, or None (fixed epsilon)."""
    return None if exploration is None else AdaptiveEpsilon(exploration.as_dict(), seed)
