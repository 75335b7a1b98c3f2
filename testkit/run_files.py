"""What a run directory says: metrics.jsonl and actors.jsonl rows, and what a finished run reached."""

from __future__ import annotations

import json
import re
from pathlib import Path


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_metrics(run_dir: Path) -> list[dict]:
    return _read_jsonl(run_dir / "metrics.jsonl")


def last_metrics(run_dir: Path) -> dict:
    rows = read_metrics(run_dir)
    return rows[-1] if rows else {}


def read_actors(run_dir: Path) -> list[dict]:
    return _read_jsonl(run_dir / "actors.jsonl")


def pipeline_result(run_dir: Path) -> dict:
    """What a finished run reached: from its learner.log's --stop-at-return line and metrics.jsonl."""
    text = (run_dir / "learner.log").read_text()
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    m = re.search(r"reached --stop-at-return \S+: mean of the last \d+ episodes (\S+) at ([\d,]+) steps, ([\d.]+) s",
                  text)
    means = [r["mean_return"] for r in rows if r["mean_return"] is not None]
    if m:
        means.append(float(m.group(1)))  # the stop line's mean can come after the last metrics row
    return {
        "solved": m is not None,
        "steps": int(m.group(2).replace(",", "")) if m else rows[-1]["steps"],
        "seconds": float(m.group(3)) if m else rows[-1]["wall_s"],
        "final_mean_return": float(m.group(1)) if m else rows[-1]["mean_return"],
        "best_mean_return": max(means, default=None),
        "updates": rows[-1]["updates"],
        "policy_lag_mean": _mean([r["policy_lag_mean"] for r in rows if r["policy_lag_mean"] is not None]),
        "policy_lag_max": max([r["policy_lag_max"] for r in rows if r["policy_lag_max"] is not None], default=None),
    }


def _mean(xs: list[float]) -> float | None:
    return round(sum(xs) / len(xs), 3) if xs else None


def rejected_outside(samples: list[tuple[float, dict]], windows: list[tuple[float, float]], grace: float,
                     owed: list[tuple[float, int]] = ()) -> int:
    """Rejections counted between samples outside every flood window (+ `grace` s): honest ones,
    less the forged rollouts still in flight when their fault ended (`owed`: (end, how many),
    counted once read). A counter that goes down (a resumed learner, which never reads what the
    killed one left queued) starts a new baseline and forgets what was owed."""
    total, late, pending = 0, 0, sorted(owed)
    for (_, a), (t, b) in zip(samples, samples[1:], strict=False):
        d = b.get("rejected_messages", 0) - a.get("rejected_messages", 0)
        if d < 0:
            late, pending = 0, [(e, n) for e, n in pending if e > t]
            continue
        while pending and pending[0][0] <= t:
            late += pending.pop(0)[1]
        if d > 0 and not any(s <= t <= e + grace for s, e in windows):
            excused = min(d, late)
            late -= excused
            total += d - excused
    return total
