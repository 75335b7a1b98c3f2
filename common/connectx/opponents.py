"""Players an agent meets: ``random``, ``tactical`` (random, but takes a win), Kaggle's
``negamax`` (and shallower ``negamaxN``), and a policy network.

Every opponent has a ``name`` and ``act(own, opp) -> column``, where ``own`` are the pieces of
the player to move (the opponent itself) and ``opp`` the other side's, as bitboards.
"""

from __future__ import annotations

import random
from typing import Protocol

import numpy as np
import torch
from torch import nn

from common.connectx.features import legal_mask, planes
from common.connectx.game import COLUMNS, TOP_CELL
from common.connectx.negamax import Negamax, immediate_win
from common.policy import mask_logits


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
        with torch.inference_mode():
            logits = mask_logits(self.model.policy_logits(obs), mask)[0]
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
