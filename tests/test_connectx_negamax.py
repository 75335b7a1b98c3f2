"""The negamax opponent scores the seven root columns exactly as Kaggle's built-in agent does.

The reference (testkit/connectx_reference.py, `ref_root_scores`) is a deliberately plain transcription of the rules of Kaggle's negamax
(kaggle_environments/envs/connectx/connectx.py) on a list-of-rows board: slow, no bitboards,
no memo, written apart from common/connectx/negamax.py. A few scores are also derived by hand.
"""

from __future__ import annotations

from collections import Counter

import pytest

from common.connectx.game import Game
from common.connectx.negamax import Negamax, immediate_win, root_scores
from testkit import connectx_reference as reference
from testkit.connectx_reference import ref_root_scores


def fast_scores(board: list[int], depth: int = 4) -> list[float | None]:
    g = Game.from_board(board)
    own, opp = g.own_opp()
    return root_scores(own, opp, g.mask, depth)


def position(moves: str) -> list[int]:
    g = Game()
    for ch in moves:
        g.play(int(ch))
    assert not g.done
    return g.board()


def random_positions(n: int, seed: int) -> list[list[int]]:
    """Boards of games still going where the player to move has no immediate win."""
    games = reference.random_positions(3 * n, seed)
    return [g.board() for g in games if immediate_win(g.own_opp()[0], g.mask) is None][:n]


# --------------------------------------------------------------------------- by hand


def test_depth0_scores_by_hand():
    # mark 1 at the bottom of columns 2 and 3, mark 2 at the bottom of 0 and 6; mark 1 to move.
    board = position("2036")
    # (43 - 4) / 2 = 19.5 everywhere, +1 per own neighbour left/right, below only in rows 0-3:
    # column 1 and 4 touch mark 1 on the bottom row; column 2 lands in row 4 on its own piece,
    # which does not count (row 4 is one of the two bottom rows).
    assert fast_scores(board, 0) == [19.5, 20.5, 19.5, 19.5, 20.5, 19.5, 19.5]
    assert ref_root_scores(board, 1, 0) == fast_scores(board, 0)


def test_an_unstoppable_threat_scores_every_column_as_the_loss():
    # mark 1 holds the bottom of columns 1-3, mark 2 sits on two of them; mark 2 to move. Wherever
    # it plays, mark 1 then wins at column 0 or 4 with 6 pieces down: -(43 - 6) / 2 = -18.5.
    board = position("11223")
    assert fast_scores(board) == [-18.5] * 7
    assert ref_root_scores(board, 2) == [-18.5] * 7


def test_the_leftmost_immediate_win_is_taken():
    # mark 1 can complete the bottom row at column 0 or column 4; both win, the scan takes 0.
    g = Game()
    for ch in "162636":
        g.play(int(ch))
    own, opp = g.own_opp()
    assert immediate_win(own, g.mask) == 0
    assert {Negamax(seed=s).act(own, opp) for s in range(20)} == {0}


# --------------------------------------------------------------------------- against the reference


def test_root_scores_equal_the_reference_on_random_positions():
    for board in random_positions(25, seed=11):
        mark = 1 if sum(v == 1 for v in board) == sum(v == 2 for v in board) else 2
        assert fast_scores(board) == ref_root_scores(board, mark), Game.from_board(board).render()


@pytest.mark.parametrize("depth", [1, 2])
def test_shallower_searches_equal_the_reference(depth: int):
    for board in random_positions(40, seed=depth):
        mark = 1 if sum(v == 1 for v in board) == sum(v == 2 for v in board) else 2
        assert fast_scores(board, depth) == ref_root_scores(board, mark, depth)


def test_ties_are_broken_by_coin_flips_scanning_left_to_right():
    # Empty board: the scores are symmetric; the tied maximum columns i1 < ... < ik are chosen
    # with probability 1/2 for ik, 1/4 for ik-1, ..., 1/2^(k-1) for i1 and i2.
    scores = fast_scores([0] * 42)
    assert scores == ref_root_scores([0] * 42, 1)
    best = max(s for s in scores if s is not None)
    tied = [c for c, s in enumerate(scores) if s == best]
    assert len(tied) >= 2
    want = {c: 0.5 ** (len(tied) - i) for i, c in enumerate(tied)}
    want[tied[0]] = want[tied[1]]
    player = Negamax(seed=3)
    n = 4000
    counts = Counter(player.act(0, 0) for _ in range(n))
    assert set(counts) == set(tied)
    for c, p in want.items():
        assert abs(counts[c] / n - p) < 4 * (p * (1 - p) / n) ** 0.5 + 0.005, (counts, want)
