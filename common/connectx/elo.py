"""Elo ratings from game results (Bradley-Terry maximum likelihood), anchored at one player.

``fit(games)`` takes ``(a, b, score_a)`` triples (1 win, 0.5 draw, 0 loss for ``a``). Each pair
that met also gets one virtual draw, so a perfect record gives a large but finite gap. Ratings
are on Elo's scale: a 400-point gap means 10:1 odds.
"""

from __future__ import annotations

import math
from collections import defaultdict

SCALE = 400.0 / math.log(10.0)


def fit(games: list[tuple[str, str, float]], anchor: str = "random", anchor_rating: float = 0.0,
        iterations: int = 2000) -> dict[str, float]:
    """Ratings of every player in ``games``; ``anchor`` (when present) sits at ``anchor_rating``."""
    score: dict[tuple[str, str], float] = defaultdict(float)  # a's points against b
    count: dict[tuple[str, str], float] = defaultdict(float)
    players: set[str] = set()
    for a, b, s in games:
        if a == b:
            continue
        players |= {a, b}
        score[(a, b)] += s
        score[(b, a)] += 1.0 - s
        count[(a, b)] += 1.0
        count[(b, a)] += 1.0
    for pair in list(count):
        score[pair] += 0.5
        count[pair] += 1.0
    if not players:
        return {}
    # Zermelo's / Hunter's MM iteration on strengths gamma = exp(r / SCALE)
    gamma = dict.fromkeys(players, 1.0)
    for _ in range(iterations):
        new = {}
        for p in players:
            wins = sum(score[(p, q)] for q in players if (p, q) in count)
            denom = sum(count[(p, q)] / (gamma[p] + gamma[q]) for q in players if (p, q) in count)
            new[p] = wins / denom if denom > 0 else gamma[p]
        delta = max(abs(math.log(new[p] / gamma[p])) for p in players)
        gamma = new
        if delta < 1e-9:
            break
    ref = anchor if anchor in players else min(players)
    base = math.log(gamma[ref]) * SCALE - (anchor_rating if ref == anchor else 0.0)
    return {p: math.log(g) * SCALE - base for p, g in sorted(gamma.items())}
