"""An actor's opponents in two-player games: it draws one per game from the league's weights.

The learner publishes the league (opponent names and their probabilities) and each snapshot's
weights over the weights socket; the actor keeps the snapshots it has received (by name) and
draws among the opponents it can field: scripted players always, ``self`` (its own current
policy, the same model object the actor acts with) always, a snapshot once its weights arrived.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from common.connectx.opponents import Opponent, PolicyPlayer, scripted
from common.model import build_model, load_numpy_state

SELF = "self"


class OpponentPool:
    def __init__(self, model: nn.Module, model_spec: dict[str, Any], seed: int):
        self.model_spec = model_spec
        self.rng = np.random.default_rng([seed, 11])
        self._seed = seed
        self.weights: dict[str, float] = {"random": 1.0}  # until the learner's league arrives
        self.snapshots: dict[str, PolicyPlayer] = {}
        self.scripted: dict[str, Opponent] = {}
        self.current = PolicyPlayer(model, SELF, seed=self._child_seed())

    def _child_seed(self) -> int:
        return int(self.rng.integers(1 << 62))

    def set_league(self, weights: dict[str, float]) -> None:
        """New league weights; snapshots no longer in the league are forgotten."""
        self.weights = dict(weights)
        for name in list(self.snapshots):
            if name not in weights:
                del self.snapshots[name]

    def add_snapshot(self, name: str, state: dict[str, np.ndarray]) -> None:
        if name in self.snapshots:
            return
        model = build_model(self.model_spec).eval()
        load_numpy_state(model, state)
        self.snapshots[name] = PolicyPlayer(model, name, seed=self._child_seed())

    def forget_snapshots(self) -> None:
        """Drop every snapshot (a new learner session: its snapshots may reuse the names)."""
        self.snapshots.clear()

    def wants(self, name: object) -> bool:
        """True for a snapshot of the league this actor does not hold yet."""
        return (isinstance(name, str) and name.startswith("snap") and name in self.weights
                and name not in self.snapshots)

    def _player(self, name: str) -> Opponent | None:
        if name == SELF:
            return self.current
        if name in self.snapshots:
            return self.snapshots[name]
        if name.startswith("snap"):
            return None  # weights not here yet
        if name not in self.scripted:
            self.scripted[name] = scripted(name, seed=self._child_seed())
        return self.scripted[name]

    def pick(self) -> Opponent:
        """The next game's opponent, drawn from the league's weights among those available."""
        names = [n for n in self.weights if self._player(n) is not None]
        p = np.array([self.weights[n] for n in names], dtype=np.float64)
        if not names or p.sum() <= 0:
            return self._player("random")  # type: ignore[return-value]
        return self._player(names[int(self.rng.choice(len(names), p=p / p.sum()))])  # type: ignore[return-value]
