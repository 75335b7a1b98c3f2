"""Players an agent meets: ``random``, ``tactical`` (random, but takes a win), Kaggle's
``negamax`` (and shallower ``negamaxN``), and a policy network; and an actor's ``OpponentPool``.

Every opponent has a ``name`` and ``act(own, opp) -> column``, where ``own`` are the pieces of
the player to move (the opponent itself) and ``opp`` the other side's, as bitboards.

The learner publishes the league (opponent names and their probabilities) and each snapshot's
weights over the weights socket; an actor's pool keeps the snapshots it has received (by name)
and draws one opponent a game among those it can field: scripted players always, ``self`` (its
own current policy, the same model object the actor acts with) always, a snapshot once its
weights arrived.
"""

from __future__ import annotations

import random
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from common.action_sampling import mask_logits
from common.connectx.features import legal_mask, planes
from common.connectx.game import COLUMNS, TOP_CELL
from common.connectx.league import SELF
from common.connectx.negamax import Negamax, immediate_win
from common.model import build_model, load_numpy_state


class Opponent(Protocol):
    name: str

    def act(self, own: int, opp: int) -> int: ...


class RandomPlayer:
    """Uniform over the columns that are not full."""

    def __init__(self, seed: int | None = None, name: str = "random"):
        self.name = name
        self.rng = random.Random(seed)

    def act(self, own: int, opp: int) -> int:
        mask = own | opp
        return self.rng.choice([c for c in range(COLUMNS) if not mask & TOP_CELL[c]])


class TacticalRandom(RandomPlayer):
    """Takes an immediate win when it has one (the leftmost), else plays uniformly at random: a
    random player that punishes a threat left open."""

    def __init__(self, seed: int | None = None, name: str = "tactical"):
        super().__init__(seed, name)

    def act(self, own: int, opp: int) -> int:
        win = immediate_win(own, own | opp)
        return super().act(own, opp) if win is None else win


class NegamaxPlayer(Negamax):
    """Kaggle's negamax (depth 4 unless told otherwise)."""

    def __init__(self, depth: int = 4, seed: int | None = None, name: str | None = None):
        super().__init__(depth=depth, seed=seed)
        self.name = name or ("negamax" if depth == 4 else f"negamax{depth}")


class PolicyPlayer:
    """A policy network playing from its own point of view: greedy, or sampled from the masked
    softmax with its own seeded generator."""

    def __init__(self, model: nn.Module, name: str, greedy: bool = False, seed: int | None = None):
        self.model = model
        self.name = name
        self.greedy = greedy
        self.rng = np.random.default_rng(seed)

    def act(self, own: int, opp: int) -> int:
        obs = torch.from_numpy(planes(own, opp)).unsqueeze(0)
        mask = torch.from_numpy(legal_mask(own, opp)).unsqueeze(0)
        with torch.inference_mode():  # through the agent contract; board networks keep no state
            logits, _, _ = self.model.step(obs, self.model.initial_state(1), torch.zeros(1, dtype=torch.bool))
            logits = mask_logits(logits, mask)[0]
        if self.greedy:
            return int(logits.argmax())
        probs = torch.softmax(logits.double(), 0).numpy()
        return int(self.rng.choice(COLUMNS, p=probs / probs.sum()))


def scripted(name: str, seed: int | None = None) -> Opponent:
    """``random``, ``tactical``, ``negamax`` or ``negamaxN`` (depth N); ValueError otherwise."""
    if name == "random":
        return RandomPlayer(seed)
    if name == "tactical":
        return TacticalRandom(seed)
    if name.startswith("negamax"):
        depth = name.removeprefix("negamax") or "4"
        if depth.isdigit() and 0 <= int(depth) <= 6:
            return NegamaxPlayer(int(depth), seed, name)
    raise ValueError(f"unknown opponent {name!r}: random, tactical, negamax, or negamaxN (depth N in 0..6)")


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
