"""ConnectX evaluation: a policy against the scripted players from both seats, and Elo of the
league's snapshots.

``evaluate_model`` plays the greedy policy (the exported agent's choice) ``games_per_seat`` games
from each seat against each named opponent; opponent i of a match is seeded from ``seed`` and i,
so a match is reproducible. ``rate_snapshots`` plays each snapshot of ``RUN/league/`` that has no
games yet against ``random``, ``negamax`` and every earlier snapshot, sampling its moves (greedy
snapshots would repeat one game per seat), appends the games to ``league/games.jsonl`` and writes
the Elo fit of all of them (random = 0) to ``league/elo.json``; the first time, negamax also
plays random, which fixes the scale between the two.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from common.connectx import elo
from common.connectx.match import MatchResult, play_game, play_match
from common.connectx.opponents import PolicyPlayer, scripted
from common.model import build_model

SNAPSHOT = re.compile(r"^snap(\d+)\.pt$")
RATING_OPPONENTS = ("random", "negamax")


def _seed(*parts: int | str) -> int:
    ints = [p if isinstance(p, int) else int.from_bytes(p.encode()[:8].ljust(8, b"\0"), "little") for p in parts]
    return int(np.random.SeedSequence(ints).generate_state(1)[0])


def evaluate_model(model: nn.Module, opponents: list[str], games_per_seat: int, seed: int = 0) -> list[MatchResult]:
    """Greedy ``model`` against each scripted opponent, ``games_per_seat`` games from each seat."""
    agent = PolicyPlayer(model.eval(), "agent", greedy=True)
    return [play_match(agent, lambda i, n=name: scripted(n, seed=_seed(seed, n, i)), games_per_seat, name)
            for name in opponents]


def _snapshots(league_dir: Path) -> list[tuple[int, Path]]:
    found = [(int(m.group(1)), p) for p in league_dir.glob("snap*.pt") if (m := SNAPSHOT.match(p.name))]
    return sorted(found)


def load_snapshot(path: Path) -> nn.Module:
    data = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(data["model_spec"])
    model.load_state_dict(data["model"])
    return model.eval()


def rate_snapshots(league_dir: str | Path, games_per_pair: int = 20, seed: int = 0) -> dict[str, float]:
    """Rate the snapshots not rated yet (see the module docstring); returns all ratings."""
    league_dir = Path(league_dir)
    games_file = league_dir / "games.jsonl"
    games: list[tuple[str, str, float]] = []
    if games_file.exists():
        for line in games_file.read_text().splitlines():
            row = json.loads(line)
            games.append((row["a"], row["b"], float(row["score_a"])))
    rated = {a for a, _, _ in games}
    snaps = _snapshots(league_dir)
    players = {}
    new_rows = []
    if snaps and RATING_OPPONENTS[1] not in rated:  # negamax against random sets the scale
        for i in range(games_per_pair):
            seat = i % 2
            g = play_game(scripted(RATING_OPPONENTS[1], seed=_seed(seed, "anchor", i)),
                          scripted(RATING_OPPONENTS[0], seed=_seed(seed, "anchor-r", i)), seat)
            score = 0.5 if g.winner == 0 else float(g.winner == seat + 1)
            new_rows.append({"a": RATING_OPPONENTS[1], "b": RATING_OPPONENTS[0], "score_a": score})
    for k, path in snaps:
        name = f"snap{k}"
        if name in rated:
            continue
        try:
            players[name] = load_snapshot(path)
        except (OSError, RuntimeError, KeyError, ValueError):
            continue  # written while we looked, or damaged: rated next time
        rivals = list(RATING_OPPONENTS) + [f"snap{j}" for j, _ in snaps if j < k]
        for rival in rivals:
            for i in range(games_per_pair):
                me = PolicyPlayer(players[name], name, seed=_seed(seed, name, rival, i))
                if rival.startswith("snap"):
                    if rival not in players:
                        players[rival] = load_snapshot(league_dir / f"{rival}.pt")
                    other = PolicyPlayer(players[rival], rival, seed=_seed(seed, rival, name, i))
                else:
                    other = scripted(rival, seed=_seed(seed, rival, name, i))
                seat = i % 2
                g = play_game(me, other, seat)
                score = 0.5 if g.winner == 0 else float(g.winner == seat + 1)
                new_rows.append({"a": name, "b": rival, "score_a": score})
    if new_rows:
        with open(games_file, "a") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in new_rows)
        games += [(r["a"], r["b"], r["score_a"]) for r in new_rows]
    ratings = elo.fit(games, anchor="random")
    if ratings:
        tmp = league_dir / ".elo.json.tmp"
        tmp.write_text(json.dumps(ratings, indent=1, sort_keys=True))
        tmp.replace(league_dir / "elo.json")
    return ratings


def check_request(opponents: list[str], games_per_seat: int) -> None:
    """ValueError (one line) for an evaluation no one can play: unknown opponents, no games."""
    if games_per_seat < 1:
        raise ValueError(f"games must be at least 1, got {games_per_seat}")
    for name in opponents:
        scripted(name)


def evaluate_policy(policy: Any, run_dir: str | Path, *, opponents: list[str], games_per_seat: int,
                    seed: int = 0, rate: bool = False) -> dict:
    """`learner evaluate RUN --opponent ...`: a run's loaded policy (``spec``, ``model``,
    ``checkpoint``) against the scripted ``opponents``; with ``rate``, the Elo of the league's
    snapshots as well. ValueError for a policy of another game."""
    check_request(opponents, games_per_seat)
    if policy.spec["kind"] != "connectx":
        raise ValueError(f"{policy.checkpoint} is not a ConnectX policy (--opponent is for two-player games)")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        matches = evaluate_model(policy.model, opponents, games_per_seat, seed)
    finally:
        torch.set_num_threads(threads)
    out = {"checkpoint": str(policy.checkpoint), "games_per_seat": games_per_seat,
           "matches": [m.as_dict() for m in matches], "lines": [m.line() for m in matches]}
    league_dir = Path(run_dir) / "league"
    if rate and league_dir.is_dir():
        out["elo"] = rate_snapshots(league_dir, seed=seed)
    return out
