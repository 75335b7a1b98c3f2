"""Plain-board ConnectX helpers for the tests, written from the rules (no bitboards)."""

from __future__ import annotations

import random
from collections.abc import Iterator

from common.connectx.game import Game


def grid(board: list[int]) -> list[list[int]]:
    """Kaggle's 42-cell board as 6 rows of 7, row 0 on top."""
    return [list(board[r * 7:(r + 1) * 7]) for r in range(6)]


def four_through(g: list[list[int]], r: int, c: int, mark: int) -> bool:
    """Would (or does) a piece of ``mark`` at (r, c) stand in four in a row? Counts both ways."""
    for dr, dc in ((1, 0), (0, 1), (1, 1), (1, -1)):
        run = 1
        for sign in (1, -1):
            rr, cc = r + sign * dr, c + sign * dc
            while 0 <= rr < 6 and 0 <= cc < 7 and g[rr][cc] == mark:
                run += 1
                rr, cc = rr + sign * dr, cc + sign * dc
        if run >= 4:
            return True
    return False


def naive_four(board: list[int], mark: int) -> bool:
    g = grid(board)
    return any(g[r][c] == mark and four_through(g, r, c, mark) for r in range(6) for c in range(7))


def random_games(n: int, seed: int) -> Iterator[Game]:
    """Every position (the final one included) of ``n`` uniformly random games."""
    rng = random.Random(seed)
    for _ in range(n):
        g = Game()
        while not g.done:
            yield g
            g.play(rng.choice([c for c in range(7) if g.legal(c)]))
        yield g


def random_positions(n: int, seed: int, max_moves: int = 30) -> list[Game]:
    """``n`` positions of games still going after up to ``max_moves`` random moves."""
    rng = random.Random(seed)
    out: list[Game] = []
    while len(out) < n:
        g = Game()
        for _ in range(rng.randrange(0, max_moves)):
            g.play(rng.choice([c for c in range(7) if g.legal(c)]))
            if g.done:
                break
        if not g.done:
            out.append(g)
    return out
