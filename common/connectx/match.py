"""Games between two players, from both seats, with Kaggle's scoring (a draw counts 1/2)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from common.connectx.game import Game
from common.connectx.opponents import Opponent


@dataclass
class SeatRecord:
    wins: int = 0
    draws: int = 0
    losses: int = 0
    illegal: int = 0  # games the agent lost by an illegal move

    @property
    def games(self) -> int:
        return self.wins + self.draws + self.losses

    @property
    def score(self) -> float:
        return (self.wins + 0.5 * self.draws) / self.games if self.games else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"wins": self.wins, "draws": self.draws, "losses": self.losses, "illegal": self.illegal,
                "score": self.score}


@dataclass
class MatchResult:
    opponent: str
    seats: list[SeatRecord] = field(default_factory=lambda: [SeatRecord(), SeatRecord()])

    @property
    def illegal(self) -> int:
        return sum(s.illegal for s in self.seats)

    def as_dict(self) -> dict[str, Any]:
        return {"opponent": self.opponent, "first": self.seats[0].as_dict(),
                "second": self.seats[1].as_dict(), "illegal": self.illegal}

    def line(self) -> str:
        def one(s: SeatRecord) -> str:
            return f"W/D/L {s.wins}/{s.draws}/{s.losses} score {s.score:.3f}"
        return (f"vs {self.opponent}: first {one(self.seats[0])}; second {one(self.seats[1])}; "
                f"illegal moves {self.illegal}")


def play_game(agent: Opponent, opponent: Opponent, seat: int) -> Game:
    """One game; ``agent`` moves first when ``seat`` is 0. Returns the finished game."""
    game = Game()
    while not game.done:
        own, opp = game.own_opp()
        mover = agent if game.moves % 2 == seat else opponent
        game.play(int(mover.act(own, opp)))
    return game


def play_match(agent: Opponent, make_opponent: Callable[[int], Opponent], games_per_seat: int,
               name: str | None = None) -> MatchResult:
    """``games_per_seat`` games from each seat; ``make_opponent(i)`` gives game i's opponent (seed it
    by i for reproducible matches)."""
    result = MatchResult(name or make_opponent(0).name)
    for seat in (0, 1):
        rec = result.seats[seat]
        for i in range(games_per_seat):
            game = play_game(agent, make_opponent(seat * games_per_seat + i), seat)
            if game.winner == seat + 1:
                rec.wins += 1
            elif game.winner == 0:
                rec.draws += 1
            else:
                rec.losses += 1
                rec.illegal += game.illegal
    return result
