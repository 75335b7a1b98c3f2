"""The opponent pool of two-player self-play (prioritised fictitious self-play, AlphaStar-style).

Members are the scripted players (``random``, ``negamax``, ...), snapshots of the learner's
policy (``snap<K>``) and ``self`` (the current policy). The learner feeds every finished game's
result (from the agent's side) to ``record``; ``weights`` is the distribution actors draw each
game's opponent from: the fixed ``shares`` first (e.g. ``self`` 0.1, ``negamax`` 0.3), the rest
over all pool members in proportion to ``(1 - score) ** pfsp_power + floor`` -- the opponents it
still loses to come up most. A member with fewer than ``min_games`` recent games counts as
unbeaten (score 0), so a newcomer is tried.

A snapshot joins (``due``) when the agent scores at least ``admit_score`` against every member
and ``admit_interval_s`` passed since the last one; beyond ``max_snapshots`` the one it beats
most easily leaves. No I/O and no torch here.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

SELF = "self"


@dataclass
class LeagueConfig:
    scripted: tuple[str, ...] = ("random", "negamax")
    shares: dict[str, float] = field(default_factory=lambda: {SELF: 0.1})
    pfsp_power: float = 2.0
    floor: float = 0.05
    window: int = 200
    min_games: int = 30
    admit_score: float = 0.7
    admit_interval_s: float = 120.0
    max_snapshots: int = 8

    def __post_init__(self) -> None:
        if any(not 0.0 <= v for v in self.shares.values()) or sum(self.shares.values()) >= 1.0:
            raise ValueError(f"fixed shares must be non-negative and sum below 1, got {self.shares}")
        unknown = set(self.shares) - set(self.scripted) - {SELF}
        if unknown:
            raise ValueError(f"shares name players outside the league: {', '.join(sorted(unknown))}")
        if not self.scripted:
            raise ValueError("the league needs at least one scripted player")
        if self.max_snapshots < 1 or self.window < 1 or self.min_games < 1:
            raise ValueError("max_snapshots, window and min_games must be at least 1")


@dataclass
class Member:
    name: str
    results: deque = field(default_factory=deque)  # agent's scores: 1 win, 0.5 draw, 0 loss
    games: int = 0  # all games ever against it

    def score(self, min_games: int) -> float | None:
        if len(self.results) < min_games:
            return None
        return sum(self.results) / len(self.results)


class League:
    def __init__(self, cfg: LeagueConfig):
        self.cfg = cfg
        self.members: dict[str, Member] = {n: Member(n, deque(maxlen=cfg.window)) for n in cfg.scripted}
        self.self_results: deque = deque(maxlen=cfg.window)
        self.next_snapshot = 0
        self.last_admit: float | None = None

    @property
    def snapshots(self) -> list[str]:
        return [n for n in self.members if n.startswith("snap")]

    def record(self, opponent: str, result: int) -> None:
        """One finished game against ``opponent``: result +1 win, 0 draw, -1 loss (agent's side)."""
        score = (result + 1) / 2
        if opponent == SELF:
            self.self_results.append(score)
            return
        member = self.members.get(opponent)
        if member is not None:  # a snapshot that already left the pool: nothing to learn
            member.results.append(score)
            member.games += 1

    def scores(self) -> dict[str, float | None]:
        return {n: m.score(self.cfg.min_games) for n, m in self.members.items()}

    def weights(self) -> dict[str, float]:
        """Probability of each opponent name for the next game (sums to 1)."""
        raw = {}
        for name, score in self.scores().items():
            raw[name] = (1.0 - (0.0 if score is None else score)) ** self.cfg.pfsp_power + self.cfg.floor
        total = sum(raw.values())
        rest = 1.0 - sum(self.cfg.shares.values())
        out = {n: rest * w / total for n, w in raw.items()}
        for name, share in self.cfg.shares.items():
            out[name] = out.get(name, 0.0) + share
        return out

    def due(self, now: float) -> bool:
        """Time for a snapshot: the agent beats every member by ``admit_score`` (on enough games)."""
        if self.last_admit is not None and now - self.last_admit < self.cfg.admit_interval_s:
            return False
        scores = self.scores().values()
        return all(s is not None and s >= self.cfg.admit_score for s in scores)

    def admit(self, now: float, name: str | None = None) -> tuple[str, str | None]:
        """Add the next snapshot (or ``name``, restoring a saved pool); returns its name and the
        name of the one that left (or None)."""
        if name is None:
            name = f"snap{self.next_snapshot}"
            self.next_snapshot += 1
        self.members[name] = Member(name, deque(maxlen=self.cfg.window))
        self.last_admit = now
        gone = None
        if len(self.snapshots) > self.cfg.max_snapshots:
            scores = self.scores()
            gone = max(self.snapshots[:-1], key=lambda n: scores[n] or 0.0)
            del self.members[gone]
        return name, gone

    def state(self) -> dict[str, Any]:
        """JSON-ready picture of the pool (league.json, checkpoints)."""
        scores = self.scores()
        return {
            "next_snapshot": self.next_snapshot,
            "weights": self.weights(),
            "members": {n: {"score": scores[n], "games": m.games} for n, m in self.members.items()},
        }
