"""ConnectX (6 rows, 7 columns, 4 in a row) as Kaggle plays it, on bitboards.

Kaggle's board is a list of 42 cells, index ``c + 7 * r`` with row 0 on top; 0 is empty, 1 and 2
are the players' marks, mark 1 moves first. Here each side is a Python int with one bit per cell,
column-major, seven bits a column (six rows from the bottom up plus an always-empty sentinel bit):
cell (row r, column c) is bit ``7 * c + (5 - r)``. The sentinel keeps shifts by 1, 6, 7 and 8
(vertical, the two diagonals, horizontal) from wrapping between columns (John Tromp's layout).

This module imports only the standard library: ``learner export-kaggle`` copies it verbatim into
the submission file, so training, evaluation and the exported agent share one implementation.
"""

from __future__ import annotations

ROWS, COLUMNS, INAROW = 6, 7, 4
CELLS = ROWS * COLUMNS
_H1 = ROWS + 1  # bits per column, with the sentinel

BOTTOM = sum(1 << (_H1 * c) for c in range(COLUMNS))  # lowest cell of every column
BOARD = BOTTOM * ((1 << ROWS) - 1)  # every real cell
COLUMN_MASK = tuple(((1 << ROWS) - 1) << (_H1 * c) for c in range(COLUMNS))
TOP_CELL = tuple(1 << (_H1 * c + ROWS - 1) for c in range(COLUMNS))
ABOVE_BOTTOM_TWO = BOARD & ~(BOTTOM | (BOTTOM << 1))  # rows 0-3 in Kaggle's numbering


def bit(row: int, column: int) -> int:
    """The bit of Kaggle's cell (row, column), row 0 on top."""
    return 1 << (_H1 * column + ROWS - 1 - row)


# Kaggle's index -> bit, and back (only real cells).
INDEX_BIT = tuple(bit(i // COLUMNS, i % COLUMNS) for i in range(CELLS))


def has_four(pieces: int) -> bool:
    """True when ``pieces`` holds four in a row in any direction."""
    for s in (1, _H1, _H1 - 1, _H1 + 1):
        pairs = pieces & (pieces >> s)
        if pairs & (pairs >> (2 * s)):
            return True
    return False


def winning_cells(pieces: int, mask: int) -> int:
    """Empty cells (landing or not) where one more piece of ``pieces`` completes four in a row."""
    won = (pieces << 1) & (pieces << 2) & (pieces << 3)  # three below
    for s in (_H1, _H1 - 1, _H1 + 1):
        two_before = (pieces << s) & (pieces << (2 * s))
        won |= two_before & ((pieces << (3 * s)) | (pieces >> s))
        two_after = (pieces >> s) & (pieces >> (2 * s))
        won |= two_after & ((pieces << s) | (pieces >> (3 * s)))
    return won & (BOARD ^ mask)


def landing_cells(mask: int) -> int:
    """The lowest empty cell of every column that is not full."""
    return (mask + BOTTOM) & BOARD


def legal_columns(mask: int) -> list[int]:
    return [c for c in range(COLUMNS) if not mask & TOP_CELL[c]]


def popcount(x: int) -> int:
    return bin(x).count("1")


class Game:
    """One game: ``pieces[0]`` for mark 1 (moves first), ``pieces[1]`` for mark 2.

    ``play`` applies Kaggle's rules: a move into a full or non-existent column loses at once.
    """

    __slots__ = ("pieces", "mask", "moves", "winner", "done", "illegal")

    def __init__(self) -> None:
        self.pieces = [0, 0]
        self.mask = 0
        self.moves = 0
        self.winner = 0  # 0 none (or draw), else the mark that won
        self.done = False
        self.illegal = False  # the game ended on an illegal move

    @property
    def mark(self) -> int:
        """The mark to move: 1 or 2."""
        return 1 + (self.moves & 1)

    def legal(self, column: int) -> bool:
        return 0 <= column < COLUMNS and not self.mask & TOP_CELL[column]

    def legal_mask(self) -> list[bool]:
        return [not self.mask & TOP_CELL[c] for c in range(COLUMNS)]

    def own_opp(self) -> tuple[int, int]:
        """(pieces of the player to move, pieces of the other player)."""
        side = self.moves & 1
        return self.pieces[side], self.pieces[1 - side]

    def play(self, column: int) -> None:
        """The player to move drops a piece in ``column``; sets done/winner/illegal."""
        if self.done:
            raise ValueError("the game is over")
        side = self.moves & 1
        if not self.legal(column):
            self.done, self.illegal, self.winner = True, True, 2 - side  # the other mark wins
            return
        move = (self.mask + BOTTOM) & COLUMN_MASK[column]
        self.mask |= move
        self.pieces[side] |= move
        self.moves += 1
        if has_four(self.pieces[side]):
            self.done, self.winner = True, 1 + side
        elif self.moves == CELLS:
            self.done = True

    def board(self) -> list[int]:
        """Kaggle's observation board: 42 ints, index c + 7 * r, row 0 on top."""
        p1, p2 = self.pieces
        return [1 if p1 & b else 2 if p2 & b else 0 for b in INDEX_BIT]

    @classmethod
    def from_board(cls, board: list[int]) -> Game:
        """A game at the position of a Kaggle board (no history; not checked for a winner)."""
        if len(board) != CELLS:
            raise ValueError(f"a board has {CELLS} cells, got {len(board)}")
        g = cls()
        for i, v in enumerate(board):
            if v in (1, 2):
                g.pieces[v - 1] |= INDEX_BIT[i]
            elif v != 0:
                raise ValueError(f"cell {i} holds {v!r}; cells are 0, 1 or 2")
        g.mask = g.pieces[0] | g.pieces[1]
        g.moves = popcount(g.mask)
        if landing_cells(g.mask) & g.mask or (g.mask & ~BOARD):
            raise ValueError("pieces float above empty cells")
        return g

    def copy(self) -> Game:
        g = Game.__new__(Game)
        g.pieces = list(self.pieces)
        g.mask, g.moves, g.winner, g.done, g.illegal = self.mask, self.moves, self.winner, self.done, self.illegal
        return g

    def render(self) -> str:
        rows = ("".join(".XO"[v] for v in self.board()[r * COLUMNS:(r + 1) * COLUMNS]) for r in range(ROWS))
        return "\n".join(rows)
