"""Two runs' mean return at equal frame counts, read from their metrics rows (benchmarks.chaos
and benchmarks.chaos_pairs): rows are (time, metrics.jsonl row) in the order written."""

from __future__ import annotations


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b to 3 places, or None where either is missing (or b is 0)."""
    return round(a / b, 3) if a is not None and b else None


def return_at(samples: list[tuple[float, dict]], frames: int) -> float | None:
    best = None
    for _, row in samples:
        if row["frames"] <= frames and row.get("mean_return") is not None:
            best = row["mean_return"]
    return best


def return_curve(chaos_rows: list[tuple[float, dict]], calm_rows: list[tuple[float, dict]], frames: int,
                 points: int = 10) -> list[dict]:
    """Both runs' mean return and their ratio at `points` equal frame counts up to `frames`:
    the end alone hides a run that fell behind and caught up."""
    out = []
    for i in range(1, points + 1):
        at = frames * i // points
        a, b = return_at(chaos_rows, at), return_at(calm_rows, at)
        out.append({"frames": at, "chaos": a, "calm": b, "ratio": ratio(a, b)})
    return out


def pooled(cells: list[tuple[float | None, float | None]]) -> float | None:
    """Sum of the first values over sum of the second, to 3 places: None unless every pair has both."""
    if not cells or any(a is None or b is None for a, b in cells):
        return None
    calm = sum(b for _, b in cells)
    return round(sum(a for a, _ in cells) / calm, 3) if calm else None


def pair_table(pairs: dict[str, tuple[list, list]], every: int) -> tuple[list[int], list[dict]]:
    """Frame marks (multiples of `every` up to the least frames every run reached) and, at each,
    {"pairs": {name: (chaos, calm, ratio)}, "pooled": mean chaos / mean calm over the pairs}."""
    reach = min(max((r["frames"] for _, r in rows), default=0) for ch, ca in pairs.values() for rows in (ch, ca))
    marks = list(range(every, reach + 1, every)) or [reach]
    table = []
    for at in marks:
        cells = {}
        for name, (ch, ca) in pairs.items():
            a, b = return_at(ch, at), return_at(ca, at)
            cells[name] = (a, b, ratio(a, b))
        table.append({"frames": at, "pairs": cells, "pooled": pooled([(a, b) for a, b, _ in cells.values()])})
    return marks, table
