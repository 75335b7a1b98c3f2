"""ConnectX rules as Kaggle plays them, checked against a plain 2-D board written from the rules."""

from __future__ import annotations

import numpy as np
import pytest

from common.connectx.features import N_PLANES, legal_mask, planes
from common.connectx.game import Game, landing_cells, winning_cells
from testkit.connectx_reference import four_through, grid, naive_four, random_games

DRAW = "015502320345364356222230416104501114435666"  # 42 moves, no four in a row


def cells_of(bits: int) -> set[int]:
    """Kaggle indices of a bitboard's cells."""
    g = Game.__new__(Game)
    g.pieces = [bits, 0]
    return {i for i, v in enumerate(g.board()) if v == 1}


def test_index_and_marks_follow_kaggle():
    g = Game()
    g.play(3)  # mark 1 lands at the bottom: row 5, index 3 + 7 * 5
    g.play(3)  # mark 2 on top of it
    g.play(0)
    b = g.board()
    assert b[3 + 35] == 1 and b[3 + 28] == 2 and b[0 + 35] == 1
    assert sum(1 for v in b if v) == 3 and g.mark == 2 and not g.done
    assert Game.from_board(b).board() == b


@pytest.mark.parametrize("moves, winner", [
    ("0101010", 1),      # vertical, column 0
    ("0011223", 1),      # horizontal, bottom row
    ("06160616", 2),     # the second player, vertical in column 6
    ("01123223633", 1),  # diagonal rising to the right
    ("65543443033", 1),  # diagonal rising to the left (the mirror image)
    ("1020", 0),         # nothing yet
])
def test_wins_in_every_direction(moves: str, winner: int):
    g = Game()
    for i, ch in enumerate(moves):
        assert not g.done, f"ended early, at move {i}"
        g.play(int(ch))
    assert g.winner == winner and g.done == (winner != 0) and not g.illegal
    if winner:
        assert naive_four(g.board(), winner) and not naive_four(g.board(), 3 - winner)


def test_no_four_across_the_column_seam():
    # mark 1 on the top cell of column 0 and the bottom three of column 1 are adjacent bits
    # in the bitboard, never a line on the board.
    board = [0] * 42
    for r in range(6):
        board[r * 7 + 0] = 2 if r % 2 else 1
    for r in (5, 4, 3):
        board[r * 7 + 1] = 1
    g = Game.from_board(board)
    assert not naive_four(board, 1)
    from common.connectx.game import has_four
    assert not has_four(g.pieces[0])


def test_full_board_without_four_is_a_draw():
    g = Game()
    for i, ch in enumerate(DRAW):
        assert not g.done, f"ended at move {i}"
        g.play(int(ch))
    assert g.done and g.winner == 0 and not g.illegal and g.moves == 42
    assert not naive_four(g.board(), 1) and not naive_four(g.board(), 2)


@pytest.mark.parametrize("column", [-1, 7, 100])
def test_move_off_the_board_loses(column: int):
    g = Game()
    g.play(2)
    g.play(column)  # mark 2 moves off the board
    assert g.done and g.illegal and g.winner == 1


def test_move_into_full_column_loses():
    g = Game()
    for _ in range(6):
        g.play(4)
    assert not g.done and not g.legal(4) and g.legal_mask()[4] is False
    g.play(4)  # mark 1 again: column 4 is full
    assert g.done and g.illegal and g.winner == 2
    with pytest.raises(ValueError):
        g.play(0)


def test_bitboards_agree_with_a_plain_board_on_random_games():
    for g in random_games(300, seed=5):
        board = g.board()
        assert (g.winner == 1) == naive_four(board, 1) and (g.winner == 2) == naive_four(board, 2)
        if g.done:
            continue
        gr = grid(board)
        for side, mark in ((0, 1), (1, 2)):
            expected = {r * 7 + c for r in range(6) for c in range(7)
                        if gr[r][c] == 0 and four_through(gr, r, c, mark)}
            assert cells_of(winning_cells(g.pieces[side], g.mask)) == expected
        lowest = {max(r for r in range(6) if gr[r][c] == 0) * 7 + c for c in range(7) if gr[0][c] == 0}
        assert cells_of(landing_cells(g.mask)) == lowest


def test_from_board_rejects_impossible_boards():
    floating = [0] * 42
    floating[3] = 1  # top row, nothing below
    with pytest.raises(ValueError, match="float"):
        Game.from_board(floating)
    with pytest.raises(ValueError):
        Game.from_board([0] * 41)
    with pytest.raises(ValueError):
        Game.from_board([3] + [0] * 41)


def test_planes_are_the_movers_point_of_view():
    for g in random_games(60, seed=9):
        if g.done:
            continue
        own, opp = g.own_opp()
        p = planes(own, opp)
        assert p.shape == (N_PLANES, 6, 7) and p.dtype == np.uint8
        board = np.array(g.board()).reshape(6, 7)
        me = g.mark
        assert (p[0] == (board == me)).all() and (p[1] == (board == 3 - me)).all()
        gr = board.tolist()
        for plane, mark in ((3, me), (4, 3 - me)):
            want = np.array([[gr[r][c] == 0 and four_through(gr, r, c, mark) for c in range(7)]
                             for r in range(6)])
            assert (p[plane] == want).all()
        land = np.zeros((6, 7), bool)
        for c in range(7):
            empty = [r for r in range(6) if gr[r][c] == 0]
            if empty:
                land[max(empty), c] = True
        assert (p[2] == land).all()
        assert (p[5] == (1 if me == 1 else 0)).all()  # mark 1 moved first
        assert (p[6] == (p[2] & p[3])).all() and (p[7] == (p[2] & p[4])).all()
        under = np.zeros((6, 7), np.uint8)
        under[1:] = p[4][:-1]  # the cell above (row - 1) is an opponent's winning cell
        assert (p[8] == (p[2] & under)).all()
        assert (legal_mask(own, opp) == (board[0] == 0)).all()
