"""Plain-board ConnectX helpers for tests and benchmarks, written from the rules (no bitboards):
boards, wins, random games and a plain negamax that Kaggle's agent and ours are held against."""

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


# --------------------------------------------------------------------------- negamax, written from the rules


def drop_row(g: list[list[int]], c: int) -> int | None:
    rows = [r for r in range(6) if g[r][c] == 0]
    return max(rows) if rows else None


def ref_value(g: list[list[int]], mark: int, depth: int) -> float:
    moves = sum(v != 0 for row in g for v in row)
    if moves == 42:
        return 0.0
    for c in range(7):  # a win at once ends the search
        r = drop_row(g, c)
        if r is not None and four_through(g, r, c, mark):
            return (43 - moves) / 2
    best = -42.0
    for c in range(7):
        r = drop_row(g, c)
        if r is None:
            continue
        if depth <= 0:
            score = (43 - moves) / 2
            score += c > 0 and g[r][c - 1] == mark
            score += c < 6 and g[r][c + 1] == mark
            score += r > 0 and g[r - 1][c] == mark  # the cell above: always empty, never counts
            score += r < 4 and g[r + 1][c] == mark  # below, only above the two bottom rows
        else:
            g[r][c] = mark
            score = -ref_value(g, 3 - mark, depth - 1)
            g[r][c] = 0
        best = max(best, score)
    return best


def ref_root_scores(board: list[int], mark: int, depth: int = 4) -> list[float | None]:
    g = [board[r * 7:(r + 1) * 7] for r in range(6)]
    out: list[float | None] = []
    for c in range(7):
        r = drop_row(g, c)
        if r is None:
            out.append(None)
            continue
        if depth <= 0:
            g2 = [row[:] for row in g]
            moves = sum(v != 0 for row in g for v in row)
            score = (43 - moves) / 2 + (c > 0 and g2[r][c - 1] == mark) + (c < 6 and g2[r][c + 1] == mark)
            score += r < 4 and g2[r + 1][c] == mark
            out.append(float(score))
            continue
        g[r][c] = mark
        out.append(-ref_value(g, 3 - mark, depth - 1))
        g[r][c] = 0
    return out
