"""Matches (both seats, Kaggle scoring), the actor's opponent pool, and Elo of league snapshots."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from common.connectx.evaluation import evaluate_model, rate_snapshots
from common.connectx.features import N_PLANES
from common.connectx.game import TOP_CELL, Game
from common.connectx.match import play_match
from common.connectx.opponents import OpponentPool, RandomPlayer, TacticalRandom, scripted
from common.model import ConnectXNet, state_to_numpy

SPEC = {"kind": "connectx", "frame_shape": [N_PLANES, 6, 7], "frame_stack": 1, "n_actions": 7,
        "channels": 0, "blocks": 0, "hidden": 16}


class Column:
    """Always the same column (then the next legal one)."""

    def __init__(self, column: int, name: str = "column"):
        self.column, self.name = column, name

    def act(self, own: int, opp: int) -> int:
        return next(c for c in [self.column, *range(7)] if not (own | opp) & TOP_CELL[c])


def test_match_counts_each_seat_with_kaggle_scoring():
    # Column-0 against column-6: the first player completes four in column 0 first, every time.
    res = play_match(Column(0, "left"), lambda i: Column(6, "right"), games_per_seat=3)
    assert res.opponent == "right"
    first, second = res.seats
    assert (first.wins, first.draws, first.losses, first.score) == (3, 0, 0, 1.0)
    assert (second.wins, second.losses, second.score) == (0, 3, 0.0)
    assert res.illegal == 0 and "first W/D/L 3/0/0" in res.line()


def test_illegal_moves_are_counted_as_losses():
    class Stubborn:
        name = "stubborn"

        def act(self, own, opp):
            return 3

    res = play_match(Stubborn(), lambda i: Column(3, "c3"), games_per_seat=2)
    assert res.seats[0].illegal == 2 and res.seats[0].losses == 2  # its 4th drop into a full column
    assert res.as_dict()["illegal"] == res.illegal


def test_tactical_random_takes_a_win_and_is_random_otherwise():
    g = Game()
    for ch in "162636":  # mark 1 holds the bottom of columns 1-3, to move
        g.play(int(ch))
    assert {TacticalRandom(seed=s).act(*g.own_opp()) for s in range(10)} == {0}
    assert len({TacticalRandom(seed=s).act(0, 0) for s in range(40)}) > 4
    assert scripted("tactical").name == "tactical"


def test_actor_pool_draws_by_league_weights_among_what_it_holds():
    model = ConnectXNet(N_PLANES, 6, 7, 7, 0, 0, 16)
    pool = OpponentPool(model, SPEC, seed=3)
    assert pool.pick().name == "random"  # before any league arrives
    pool.set_league({"negamax": 0.5, "snap0": 0.5})
    assert pool.wants("snap0") and not pool.wants("negamax")
    assert {pool.pick().name for _ in range(20)} == {"negamax"}  # snap0's weights not here yet
    pool.add_snapshot("snap0", state_to_numpy(ConnectXNet(N_PLANES, 6, 7, 7, 0, 0, 16)))
    names = [pool.pick().name for _ in range(400)]
    assert 150 < names.count("snap0") < 250
    pool.set_league({"self": 1.0})
    assert "snap0" not in pool.snapshots and pool.pick().name == "self"
    assert pool.pick() is pool.current and pool.current.model is model


def test_evaluate_model_plays_both_seats_greedily():
    torch.manual_seed(0)
    net = ConnectXNet(N_PLANES, 6, 7, 7, 0, 0, 16)
    a = [r.as_dict() for r in evaluate_model(net, ["random"], games_per_seat=5, seed=1)]
    b = [r.as_dict() for r in evaluate_model(net, ["random"], games_per_seat=5, seed=1)]
    assert a == b and a[0]["first"]["wins"] + a[0]["first"]["draws"] + a[0]["first"]["losses"] == 5


def test_snapshots_get_elo_ratings_once(tmp_path):
    torch.manual_seed(0)
    for k in range(2):
        net = ConnectXNet(N_PLANES, 6, 7, 7, 0, 0, 16)
        torch.save({"model": net.state_dict(), "model_spec": SPEC}, tmp_path / f"snap{k}.pt")
    ratings = rate_snapshots(tmp_path, games_per_pair=4)
    assert set(ratings) == {"random", "negamax", "snap0", "snap1"} and ratings["random"] == 0.0
    assert ratings["negamax"] > 200  # negamax beats random and random-ish networks
    rows = (tmp_path / "games.jsonl").read_text().splitlines()
    assert len(rows) == 4 + 4 * 2 + 4 * 3  # negamax-random; snap0: random, negamax; snap1: those, snap0
    assert json.loads((tmp_path / "elo.json").read_text()) == pytest.approx(ratings)
    assert rate_snapshots(tmp_path, games_per_pair=4) == pytest.approx(ratings)  # nothing new to play
    assert len((tmp_path / "games.jsonl").read_text().splitlines()) == len(rows)


def test_random_player_is_uniform_over_legal_columns():
    g = Game()
    for _ in range(6):
        g.play(5)
    counts = np.bincount([RandomPlayer(seed=s).act(*g.own_opp()) for s in range(700)], minlength=7)
    assert counts[5] == 0 and counts.min() == 0 and all(70 < c < 130 for i, c in enumerate(counts) if i != 5)
