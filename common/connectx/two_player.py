"""The learner's side of two-player games (ConnectX): games and seats, the league, snapshots.

``TwoPlayer`` is the wing's learner hook object (the generic learner calls it through the
family hooks, never by name). It takes every validated rollout's finished games (opponent,
seat, result), keeps the league (common/connectx/league.py) and the snapshots that joined it:
each is written to ``RUN/league/snapK.pt`` (weights_only-loadable) and published to the actors
as a ``snapshot`` message, one a publish tick, round robin, with the ``league`` message
(opponent probabilities) every tick. ``league/league.json`` is the pool as of the last report;
``league/elo.json`` (written by the evaluation, common/connectx/evaluation.py) gives every
snapshot's Elo.
"""

from __future__ import annotations

import json
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.connectx.league import SELF, League, LeagueConfig
from common.connectx.messages import encode_league, encode_snapshot
from common.connectx.opponents import scripted
from common.connectx.settings import ConnectXSettings
from common.protocol import IllegalAction, ProtocolError, Rollout


def league_config(cfg: ConnectXSettings) -> LeagueConfig:
    """The league of a configuration; ValueError (one line) for an unknown opponent or share."""
    for name in cfg.scripted_opponents():
        scripted(name)  # raises for a name no actor could field
    return LeagueConfig(scripted=cfg.scripted_opponents(), shares=cfg.shares(), pfsp_power=cfg.pfsp_power,
                        floor=cfg.pfsp_floor, admit_score=cfg.snapshot_score,
                        admit_interval_s=cfg.snapshot_interval, max_snapshots=cfg.max_snapshots)


class TwoPlayer:
    """The learner hooks of two-player games (the learner's family hook interface)."""

    counters_key = "two_player"  # where checkpoints have always kept these counters

    def __init__(self, cfg: ConnectXSettings, run_dir: Path, model_spec: dict[str, Any], spec_hash: str,
                 session: str, start: dict[str, Any] | None = None):
        self.dir = run_dir / "league"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.model_spec, self.spec_hash, self.session = model_spec, spec_hash, session
        self.league = League(league_config(cfg))
        self.eval_games, self.eval_opponents = cfg.eval_games, cfg.eval_opponents
        self.games = int((start or {}).get("games", 0))
        self.illegal_moves = int((start or {}).get("illegal_moves", 0))
        self.seat_scores = [deque(maxlen=200), deque(maxlen=200)]  # training games, sampled policy
        self.snapshot_msgs: dict[str, bytes] = {}
        self.last_eval: dict[str, Any] | None = None  # the newest evaluation, for the next report
        self._turn = 0
        self.moves = 0  # agent decisions in games against the pool
        self._last = (time.monotonic(), self.games, self.moves)
        for name in (start or {}).get("snapshots", []):
            self._restore(name)
        self.league.next_snapshot = int((start or {}).get("next_snapshot", self.league.next_snapshot))

    # ------------------------------------------------------------------ games
    def on_rollout(self, r: Rollout, checked: list[Any]) -> None:
        """A validated rollout's finished games; ``checked`` (each with ``verified``) says which
        the learner saw whole: only those move the league and the seat scores."""
        self.moves += r.steps
        for ep, check in zip(r.episodes, checked, strict=True):
            self.games += 1
            if check.verified:
                self.league.record(ep["opponent"], ep["result"])
                self.seat_scores[ep["seat"]].append((ep["result"] + 1) / 2)

    def on_rejected(self, exc: ProtocolError) -> None:
        """A rollout the learner rejected: one holding an action its own mask forbids counts as
        an illegal move."""
        if isinstance(exc, IllegalAction):
            self.illegal_moves += 1

    # ------------------------------------------------------------------ snapshots
    def due(self) -> bool:
        """Time for a snapshot of the current policy (``add_snapshot``)."""
        return self.league.due(time.monotonic())

    def add_snapshot(self, state: dict[str, np.ndarray]) -> str:
        """A snapshot of the current policy joins the pool: saved, encoded for the actors."""
        name, gone = self.league.admit(time.monotonic())
        torch.save({"model": {k: torch.from_numpy(np.array(v)) for k, v in state.items()},
                    "model_spec": self.model_spec}, self.dir / f"{name}.pt")
        self.snapshot_msgs[name] = encode_snapshot(name, state, spec_hash=self.spec_hash,
                                                            session=self.session)
        if gone is not None:
            self.snapshot_msgs.pop(gone, None)
        return name

    def _restore(self, name: str) -> None:
        path = self.dir / f"{name}.pt"
        data = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v.numpy() for k, v in data["model"].items()}
        self.league.admit(time.monotonic(), name)
        self.snapshot_msgs[name] = encode_snapshot(name, state, spec_hash=self.spec_hash,
                                                            session=self.session)

    # ------------------------------------------------------------------ publishing, reporting
    def messages(self) -> list[bytes]:
        """What a publish tick sends besides the weights: the league, and one snapshot."""
        out = [encode_league(self.league.weights(), session=self.session)]
        if self.snapshot_msgs:
            names = sorted(self.snapshot_msgs)
            out.append(self.snapshot_msgs[names[self._turn % len(names)]])
            self._turn += 1
        return out

    def elo(self) -> dict[str, float]:
        try:
            return json.loads((self.dir / "elo.json").read_text())
        except (OSError, ValueError):
            return {}

    def report(self) -> dict[str, Any]:
        """Fields for the metrics row (and TensorBoard): games/s, moves/s, seats, the pool."""
        now = time.monotonic()
        t0, g0, m0 = self._last
        dt = max(now - t0, 1e-9)
        self._last = (now, self.games, self.moves)
        state = self.league.state()
        (self.dir / "league.json").write_text(json.dumps(state, indent=1))
        row: dict[str, Any] = {
            "games": self.games, "games_per_s": round((self.games - g0) / dt, 2),
            "moves_per_s": round((self.moves - m0) / dt, 1), "illegal_moves": self.illegal_moves,
        }
        for seat, scores in zip(("first", "second"), self.seat_scores, strict=True):
            row[f"train_score_{seat}"] = round(sum(scores) / len(scores), 3) if scores else None
        row["league"] = {n: {"weight": round(state["weights"].get(n, 0.0), 4), "score": m["score"]}
                         for n, m in state["members"].items()}
        if SELF in state["weights"]:
            own = self.league.self_results
            row["league"][SELF] = {"weight": round(state["weights"][SELF], 4),
                                   "score": round(sum(own) / len(own), 3) if own else None}
        row["elo"] = {k: round(v, 1) for k, v in self.elo().items()}
        if self.last_eval is not None:
            row["eval"], self.last_eval = self.last_eval, None
        return row

    def scalars(self, row: dict[str, Any]) -> dict[str, float]:
        """TensorBoard scalars of ``report``'s fields: charts/games_per_s..., league/..., elo/..."""
        out = {f"charts/{k}": v for k, v in row.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for name, member in row.get("league", {}).items():
            out[f"league/weight_{name}"] = member["weight"]
            if member["score"] is not None:
                out[f"league/score_{name}"] = member["score"]
        out.update({f"elo/{name}": rating for name, rating in row.get("elo", {}).items()})
        return out

    # ------------------------------------------------------------------ evaluation
    def eval_args(self) -> list[str]:
        """`learner evaluate RUN` arguments of an evaluation: the greedy policy against each
        scripted opponent from both seats, and Elo ratings of the league's new snapshots."""
        return ["--opponent", self.eval_opponents, "--games", str(self.eval_games), "--rate-snapshots", "--json"]

    def eval_row(self, result: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
        """An evaluation's result as one row of evals.jsonl: a score per opponent and seat."""
        row = dict(base)
        for match in result["matches"]:
            for seat in ("first", "second"):
                row[f"{match['opponent']}_{seat}"] = match[seat]["score"]
            row[f"{match['opponent']}_illegal"] = match["illegal"]
        row["elo"] = result.get("elo", {})
        return row

    def on_eval(self, row: dict[str, Any]) -> dict[str, float]:
        """An evaluation's row (goes out with the next report); its TensorBoard scalars."""
        self.last_eval = row
        values = {f"eval/{k}": v for k, v in row.items() if k.endswith(("_first", "_second", "_illegal"))}
        values.update({f"elo/{k}": v for k, v in row.get("elo", {}).items()})
        return values

    def counters(self) -> dict[str, Any]:
        return {"games": self.games, "illegal_moves": self.illegal_moves,
                "snapshots": self.league.snapshots, "next_snapshot": self.league.next_snapshot}
