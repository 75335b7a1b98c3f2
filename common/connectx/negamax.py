"""Kaggle's built-in ``negamax`` ConnectX agent, re-implemented on bitboards.

Same algorithm as Kaggle's (kaggle_environments/envs/connectx/connectx.py), with every score
doubled so that it stays an int (Kaggle's scores are halves):

- a full board scores 0;
- if the player to move can win at once, the node scores ``(43 - moves) / 2`` and the move is
  the leftmost winning column;
- otherwise each legal column, scanned left to right, scores ``-value(child)`` one ply down, and
  at depth 0 ``(43 - moves) / 2`` plus 1 for each own piece left of, right of, and (when the
  landing row is above the two bottom rows) below the landing cell; no pruning;
- the best score wins; an equal score replaces the best so far on a coin flip.

The coin flips only pick the move at the root; the root scores themselves are deterministic,
so they are cached per position (openings repeat across games).
"""

from __future__ import annotations

import random
from collections import OrderedDict

from common.connectx.game import (
    ABOVE_BOTTOM_TWO,
    BOARD,
    BOTTOM,
    CELLS,
    COLUMN_MASK,
    COLUMNS,
    TOP_CELL,
    winning_cells,
)

DEPTH = 4
_H1 = 7
_ORDER = tuple(range(COLUMNS))


def _leaf(own: int, mask: int, n: int) -> int:
    """Doubled score of a depth-0 node with no immediate win: the best adjacency bonus."""
    land = (mask + BOTTOM) & BOARD
    left = land & (own << _H1)
    right = land & (own >> _H1)
    below = land & (own << 1) & ABOVE_BOTTOM_TWO
    if left & right & below:
        bonus = 3
    elif (left & right) | (left & below) | (right & below):
        bonus = 2
    elif left | right | below:
        bonus = 1
    else:
        bonus = 0
    return 43 - n + 2 * bonus


def _value(own: int, opp: int, mask: int, n: int, depth: int, memo: dict[tuple[int, int], int]) -> int:
    """Doubled negamax score of the position for the player to move (``own``).

    ``memo`` holds the nodes of one root search: there ``mask`` fixes the depth, so transposed
    move orders share a node (about a third less work).
    """
    key = (own, mask)
    value = memo.get(key)
    if value is not None:
        return value
    land = (mask + BOTTOM) & BOARD
    if n == CELLS:
        value = 0
    elif winning_cells(own, mask) & land:
        value = 43 - n
    elif depth <= 0:
        value = _leaf(own, mask, n)
    else:
        value = -2 * CELLS
        for c in _ORDER:
            move = land & COLUMN_MASK[c]
            if move:
                score = -_value(opp, own | move, mask | move, n + 1, depth - 1, memo)
                if score > value:
                    value = score
    memo[key] = value
    return value


def immediate_win(own: int, mask: int) -> int | None:
    """The leftmost column where the player to move wins at once, or None."""
    wins = winning_cells(own, mask) & (mask + BOTTOM) & BOARD
    if not wins:
        return None
    return next(c for c in _ORDER if wins & COLUMN_MASK[c])


def root_scores(own: int, opp: int, mask: int, depth: int = DEPTH) -> list[float | None]:
    """Kaggle's score of each column at the root (None for a full column): ``-value(child)``.

    ``own`` is the player to move. Kaggle returns before scoring the columns when an immediate
    win exists; these are the scores its loop would give otherwise (the same function with one
    ply less on each child), in Kaggle's units (halves).
    """
    n = bin(mask).count("1")
    land = (mask + BOTTOM) & BOARD
    out: list[float | None] = []
    memo: dict[tuple[int, int], int] = {}
    for c in _ORDER:
        move = land & COLUMN_MASK[c]
        if not move:
            out.append(None)
        elif depth <= 0:
            out.append(_leaf_column(own, mask, n, c) / 2)
        else:
            out.append(-_value(opp, own | move, mask | move, n + 1, depth - 1, memo) / 2)
    return out


def _leaf_column(own: int, mask: int, n: int, column: int) -> int:
    """Doubled depth-0 score of one column (what ``_leaf`` maximises)."""
    land = (mask + BOTTOM) & BOARD & COLUMN_MASK[column]
    bonus = (bool(land & (own << _H1)) + bool(land & (own >> _H1))
             + bool(land & (own << 1) & ABOVE_BOTTOM_TWO))
    return 43 - n + 2 * bonus


class Negamax:
    """Kaggle's negamax player; ``act`` gives its column for the player to move.

    ``depth`` 4 is Kaggle's; smaller depths make cheaper, weaker opponents. Root scores are kept
    in an LRU cache of ``cache_size`` positions.
    """

    def __init__(self, depth: int = DEPTH, seed: int | None = None, cache_size: int = 50_000):
        self.depth = depth
        self.rng = random.Random(seed)
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[int, int], tuple[int, tuple[float | None, ...] | None]] = OrderedDict()

    def _analyse(self, own: int, opp: int, mask: int) -> tuple[int, tuple[float | None, ...] | None]:
        key = (own, opp)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        win = immediate_win(own, mask)
        result = (win, None) if win is not None else (-1, tuple(root_scores(own, opp, mask, self.depth)))
        self._cache[key] = result
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return result

    def act(self, own: int, opp: int) -> int:
        """Column for the player with pieces ``own`` to move against ``opp``."""
        mask = own | opp
        if mask & BOARD == BOARD:
            raise ValueError("no legal move on a full board")
        win, scores = self._analyse(own, opp, mask)
        if scores is None:
            return win
        best, column = -float(CELLS), None
        for c, score in enumerate(scores):
            if score is not None and (score > best or (score == best and self.rng.random() < 0.5)):
                best, column = score, c
        if column is None:  # unreachable: some column is legal; Kaggle then picks at random
            column = self.rng.choice([c for c in _ORDER if not mask & TOP_CELL[c]])
        return column
