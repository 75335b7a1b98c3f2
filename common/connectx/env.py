"""ConnectX as a one-agent Gymnasium environment: the opponent's reply is part of ``step``.

The agent plays seat 0 (mark 1, moves first) or seat 1 (mark 2) and always sees the board from
its own point of view (:mod:`common.connectx.features`). Each game gets its opponent from
``pick_opponent`` (called at every reset), so a pool, a snapshot or the current policy can be
chosen per game; seats alternate game by game, starting from a seed-derived one.

Rewards: +1 win, -1 loss, 0 draw, all at the last step; a move into a full or non-existent
column loses at once. ``info`` always has ``action_mask`` (bool [7], the legal columns of the
next decision); at the end of a game also ``seat``, ``opponent``, ``result`` (-1/0/1) and
``illegal`` (the agent made an illegal move).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from common.connectx import ENV_ID  # noqa: F401  (the --env name)
from common.connectx.features import N_PLANES, legal_mask, planes
from common.connectx.game import COLUMNS, ROWS, Game
from common.connectx.messages import EPISODE_FIELDS
from common.connectx.opponents import Opponent, RandomPlayer


class ConnectXEnv(gym.Env):
    metadata = {"render_modes": ["ansi"]}
    episode_keys = tuple(EPISODE_FIELDS)  # what a game's end adds to its episode (the actor copies them)

    def __init__(self, seed: int = 0, pick_opponent: Callable[[], Opponent] | None = None):
        self.observation_space = gym.spaces.Box(0, 1, (N_PLANES, ROWS, COLUMNS), np.uint8)
        self.action_space = gym.spaces.Discrete(COLUMNS)
        self._default = RandomPlayer(seed)
        self.pick_opponent = pick_opponent or (lambda: self._default)
        self._seed_rng = np.random.default_rng(seed)
        self._next_seat = int(self._seed_rng.integers(2))
        self.game = Game()
        self.opponent: Opponent = self._default
        self.seat = 0

    # ------------------------------------------------------------------ helpers

    def _view(self) -> tuple[np.ndarray, dict[str, Any]]:
        own, opp = self.game.own_opp()
        return planes(own, opp), {"action_mask": legal_mask(own, opp)}

    def _opponent_move(self) -> None:
        own, opp = self.game.own_opp()
        self.game.play(int(self.opponent.act(own, opp)))

    def _end(self, info: dict[str, Any]) -> float:
        result = 0 if self.game.winner == 0 else (1 if self.game.winner == self.seat + 1 else -1)
        info.update(seat=self.seat, opponent=self.opponent.name, result=result,
                    illegal=self.game.illegal and self.game.winner != self.seat + 1,
                    opponent_illegal=self.game.illegal and self.game.winner == self.seat + 1)
        return float(result)

    # ------------------------------------------------------------------ gym API

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._seed_rng = np.random.default_rng(seed)
            self._next_seat = int(self._seed_rng.integers(2))
        options = options or {}
        self.opponent = options.get("opponent") or self.pick_opponent()
        self.seat = int(options.get("seat", self._next_seat))
        self._next_seat = 1 - self.seat
        self.game = Game()
        if self.seat == 1:
            self._opponent_move()
        return self._view()

    def step(self, action: Any):
        if self.game.done:
            raise RuntimeError("step() after the game ended: call reset()")
        self.game.play(int(action))
        if not self.game.done:
            self._opponent_move()
        obs, info = self._view()
        if not self.game.done:
            return obs, 0.0, False, False, info
        return obs, self._end(info), True, False, info

    def render(self) -> str:
        return self.game.render()
