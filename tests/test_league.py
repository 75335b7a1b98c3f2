"""Opponent pool (PFSP weights, admission, eviction) and Elo fitting."""

from __future__ import annotations

import json
import math

import pytest

from common.connectx import elo
from common.connectx.league import SELF, League, LeagueConfig


def play(league: League, opponent: str, wins: int, losses: int, draws: int = 0) -> None:
    for r in [1] * wins + [-1] * losses + [0] * draws:
        league.record(opponent, r)


def test_weights_favour_the_opponents_it_still_loses_to():
    lg = League(LeagueConfig(scripted=("random", "negamax"), shares={SELF: 0.2}, min_games=10, floor=0.02))
    w = lg.weights()
    assert w[SELF] == pytest.approx(0.2) and sum(w.values()) == pytest.approx(1.0)
    assert w["random"] == pytest.approx(w["negamax"])  # both unknown: treated as unbeaten
    play(lg, "random", 19, 1)
    play(lg, "negamax", 5, 15)
    w = lg.weights()
    assert w["negamax"] > 10 * w["random"] and w["random"] > 0  # the floor keeps random in
    assert sum(w.values()) == pytest.approx(1.0)


def test_fixed_shares_come_on_top_of_pfsp():
    lg = League(LeagueConfig(scripted=("random", "negamax"), shares={SELF: 0.1, "negamax": 0.3}, floor=1.0))
    w = lg.weights()  # floor 1: PFSP spreads the remaining 0.6 evenly over the two members
    assert w == pytest.approx({SELF: 0.1, "negamax": 0.6, "random": 0.3})


def test_snapshot_joins_only_when_it_beats_everyone_and_not_too_often():
    cfg = LeagueConfig(scripted=("random", "negamax"), min_games=10, admit_score=0.7, admit_interval_s=60)
    lg = League(cfg)
    play(lg, "random", 10, 0)
    assert not lg.due(now=0)  # negamax has too few games
    play(lg, "negamax", 6, 4)
    assert not lg.due(now=0)  # 0.6 < 0.7
    play(lg, "negamax", 10, 0)
    assert lg.due(now=0)
    name, gone = lg.admit(now=0)
    assert (name, gone) == ("snap0", None) and "snap0" in lg.weights()
    assert not lg.due(now=10)  # the new snapshot is unknown, and the interval has not passed
    play(lg, "snap0", 10, 0)
    assert not lg.due(now=30) and lg.due(now=61)
    lg.record("snap99", 1)  # a snapshot no longer in the pool is ignored
    lg.record(SELF, 0)
    assert "snap99" not in lg.members


def test_pool_keeps_the_hardest_snapshots():
    lg = League(LeagueConfig(max_snapshots=2, min_games=1, admit_interval_s=0))
    for k, (w, lo) in enumerate([(9, 1), (2, 8)]):
        lg.admit(now=k)
        play(lg, f"snap{k}", w, lo)
    name, gone = lg.admit(now=5)
    assert name == "snap2" and gone == "snap0"  # snap0 was the easiest to beat
    assert lg.snapshots == ["snap1", "snap2"]
    assert lg.state()["members"]["snap1"] == {"score": 0.2, "games": 10}


def test_bad_league_settings_are_refused():
    with pytest.raises(ValueError):
        LeagueConfig(shares={SELF: 1.0})
    with pytest.raises(ValueError, match="outside the league"):
        LeagueConfig(shares={"alphazero": 0.1})
    with pytest.raises(ValueError):
        LeagueConfig(scripted=())


def test_elo_recovers_known_gaps():
    # a beats b 3:1 in expectation -> 400*log10(3) = 191 points; b beats c 9:1 -> 382 points
    games = [("a", "b", 1.0)] * 300 + [("a", "b", 0.0)] * 100 + [("b", "c", 1.0)] * 900 + [("b", "c", 0.0)] * 100
    r = elo.fit(games, anchor="c")
    assert r["c"] == 0.0
    assert r["b"] == pytest.approx(400 * math.log10(9), abs=5)
    assert r["a"] - r["b"] == pytest.approx(400 * math.log10(3), abs=5)


def test_elo_of_a_perfect_record_is_finite_and_draws_count_half():
    r = elo.fit([("x", "random", 1.0)] * 50)
    assert r["random"] == 0.0 and 400 < r["x"] < 2000
    even = elo.fit([("x", "random", 0.5)] * 50)
    assert even["x"] == pytest.approx(0.0, abs=1e-6)
    assert elo.fit([]) == {}


def test_two_player_learner_side(tmp_path):
    """Games fill the league; a snapshot is saved, published round robin, restored on resume."""
    import numpy as np

    from common import protocol
    from common.config import Config
    from common.connectx import messages
    from common.connectx.two_player import TwoPlayer
    from common.model import board_spec, build_model, spec_hash, state_to_numpy
    from common.protocol import Rollout
    from learner.episodes import Episode

    cfg = Config(env="connectx", opponents="random,negamax", league_shares="self=0.1", snapshot_interval=0,
                 snapshot_score=0.5)
    spec = board_spec((9, 6, 7), 7, 16, 0, 0)
    tp = TwoPlayer(cfg, tmp_path, spec, spec_hash(spec), "sess")
    episodes = [{"return": 1.0, "length": 5, "frames": 5, "opponent": o, "seat": i % 2, "result": 1}
                for i, o in enumerate(["random", "negamax"] * 30)]
    r = Rollout(0, 0, np.zeros((61, 9, 6, 7), np.uint8), np.zeros((0, 9, 6, 7), np.uint8),
                np.zeros(60, np.int32), np.zeros(60, np.float32), np.zeros(60, np.float32),
                np.zeros(60, bool), np.zeros(60, bool), episodes)
    checked = [Episode(1.0, 5, 5, verified=True)] * 60
    tp.on_rollout(r, checked)
    assert tp.games == 60 and tp.due()
    # games the learner did not see whole are counted, but move neither the league nor the seats
    liar = TwoPlayer(cfg, tmp_path / "liar", spec, spec_hash(spec), "sess")
    liar.on_rollout(r, [Episode(1.0, 5, 5, verified=False)] * 60)
    assert liar.games == 60 and not liar.due() and liar.report()["train_score_first"] is None
    name = tp.add_snapshot(state_to_numpy(build_model(spec)))
    assert name == "snap0" and (tmp_path / "league" / "snap0.pt").exists()
    kinds = [protocol.decode(m)["kind"] for m in tp.messages()]
    assert kinds == ["league", "snapshot"]
    weights = messages.validate_league(protocol.decode(tp.messages()[0]))
    assert set(weights) == {"self", "random", "negamax", "snap0"}
    row = tp.report()
    assert row["games"] == 60 and row["train_score_first"] == 1.0 and row["illegal_moves"] == 0
    assert json.loads((tmp_path / "league" / "league.json").read_text())["members"]["snap0"]["games"] == 0
    again = TwoPlayer(cfg, tmp_path, spec, spec_hash(spec), "sess2", tp.counters())
    assert again.league.snapshots == ["snap0"] and again.games == 60
    assert again.add_snapshot(state_to_numpy(build_model(spec))) == "snap1"
