"""The two-player wing's settings: the opponent pool, evaluations and the board network.

`common.config.Config` includes them as a base class, so they are flags, config.toml keys and
resumable like any other setting; their checks live here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class ConnectXSettings:
    opponents: str = _f("random,tactical,negamax2,negamax", "two-player games: scripted players in the opponent pool (random, tactical, negamax, negamaxN)")
    league_shares: str = _f("self=0.1,negamax=0.3", "two-player games: fixed shares of games: name=share,... (self = the current policy); PFSP splits the rest")
    pfsp_power: float = _f(2.0, "PFSP weight of an opponent: (1 - score against it) ** power + pfsp_floor")
    pfsp_floor: float = _f(0.05, "PFSP weight every pool member keeps, however well the agent does against it")
    snapshot_score: float = _f(0.7, "a snapshot joins the pool once the agent scores this against every member")
    snapshot_interval: float = _f(120.0, "seconds at least between two snapshots joining the pool")
    max_snapshots: int = _f(6, "snapshots kept in the pool (the easiest to beat leaves)")
    eval_games: int = _f(100, "two-player games: evaluation games a seat against each of --eval-opponents")
    eval_opponents: str = _f("random,negamax", "two-player games: the scripted players evaluations play")
    board_channels: int = _f(0, "3x3 conv channels of the board network (0 = an MLP on the planes)")
    board_blocks: int = _f(0, "3x3 conv layers of the board network")

    def settings_problem(self) -> str | None:
        """One line saying what is wrong with these settings, or None."""
        for name in ("max_snapshots", "eval_games"):
            if getattr(self, name) < 1:
                return f"{name} must be at least 1, got {getattr(self, name)}"
        if self.board_channels < 0 or self.board_blocks < 0 or (self.board_blocks > 0) != (self.board_channels > 0):
            return "board_channels and board_blocks are both 0 (an MLP) or both positive"
        try:
            self.shares()
        except ValueError as exc:
            return str(exc)
        return None

    def shares(self) -> dict[str, float]:
        """league_shares as a dict; ValueError (one line) on a malformed entry."""
        out: dict[str, float] = {}
        for item in filter(None, (x.strip() for x in self.league_shares.split(","))):
            name, _, value = item.partition("=")
            try:
                out[name.strip()] = float(value)
            except ValueError:
                raise ValueError(f"league_shares: {item!r} is not name=share") from None
        return out

    def scripted_opponents(self) -> tuple[str, ...]:
        return tuple(filter(None, (x.strip() for x in self.opponents.split(","))))
