"""What the network sees: the board from the point of view of the player to move.

``planes(own, opp)`` -> uint8 ``[N_PLANES, 6, 7]`` in Kaggle's orientation (row 0 on top):

    0  own pieces                       5  all ones when the player to move moved first
    1  opponent's pieces                6  own immediate wins (landing cells of plane 3)
    2  landing cells (the legal moves)  7  opponent's immediate wins: the cells to block
    3  own winning cells (empty; landing or not)
    4  opponent's winning cells (its threats)
    8  landing cells right below an opponent's winning cell (playing there lets it win on top)

Planes 3-8 are one-ply facts any ConnectX program computes (where a piece would complete four,
and which of those cells a move reaches now); they save the network from learning four-in-a-row
detection and let a greedy policy take wins, block threats and not undercut its own blocks. This module imports only numpy and ``game``: ``learner export-kaggle`` copies
both into the submission, so training, evaluation and the exported agent compute the same planes.
"""

from __future__ import annotations

import numpy as np

from common.connectx.game import CELLS, COLUMNS, INDEX_BIT, ROWS, landing_cells, winning_cells

N_PLANES = 9
_BYTES = 7  # 49 bits of a bitboard, sentinels included
# Position of Kaggle cell i's bit in the little-endian unpacked bits of a bitboard.
_GATHER = np.array([b.bit_length() - 1 for b in INDEX_BIT], dtype=np.int64)


def _cells(boards: list[int]) -> np.ndarray:
    """[len(boards), 42] uint8 (0/1) in Kaggle's cell order."""
    raw = b"".join(x.to_bytes(_BYTES, "little") for x in boards)
    bits = np.unpackbits(np.frombuffer(raw, np.uint8), bitorder="little").reshape(len(boards), -1)
    return bits[:, _GATHER]


def planes(own: int, opp: int) -> np.ndarray:
    """The observation of the player to move, whose pieces are ``own``."""
    mask = own | opp
    n_own, n_opp = bin(own).count("1"), bin(opp).count("1")
    land, own_win, opp_win = landing_cells(mask), winning_cells(own, mask), winning_cells(opp, mask)
    cells = _cells([own, opp, land, own_win, opp_win, land & own_win, land & opp_win,
                    land & (opp_win >> 1)])
    out = np.empty((N_PLANES, CELLS), np.uint8)
    out[:5] = cells[:5]
    out[5] = 1 if n_own == n_opp else 0
    out[6:] = cells[5:]
    return out.reshape(N_PLANES, ROWS, COLUMNS)


def legal_mask(own: int, opp: int) -> np.ndarray:
    """bool [7]: columns that are not full."""
    top = (own | opp) >> (ROWS - 1)
    return np.array([not (top >> (7 * c)) & 1 for c in range(COLUMNS)], dtype=bool)
