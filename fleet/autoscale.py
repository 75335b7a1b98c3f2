"""The number of emulators chosen by measurement: a hill climb on the learner's frames/s.

`Autoscaler.decide` takes one measured window of the run at the current count (frames/s,
policy lag, stale rollouts dropped) and answers the count to run next and why:

- the learner is starved (stale rollouts dropped, or the mean policy lag above a bound): one
  fewer, and never that many again until the next re-probe;
- else climb: one more while each step up paid (or the count below was never tried), else one
  fewer if that was never tried; below the machine's cores (`cores`), only while the learner is
  busy (policy lag of `busy_lag` versions or more): when it keeps up with fresher data than that,
  the actors set the pace and fewer of them on free cores make fewer frames (a probe of 1 actor
  on 2 cores cost `./launch.sh auto` 30 % of its frames for a window);
- else go to (or keep) the best count measured, within a tolerance, so noise alone does not move it;
- every `reprobe` windows at the best, the other counts' figures are forgotten and it climbs again
  (the machine's load and the learner's speed change while training runs).

No processes and no sockets here: `fleet.local_actors` applies it to `./launch.sh auto`, the Ray
fleet driver (`fleet.driver`) to `--actors auto`; `Windows` cuts the learner's metrics into the
windows both measure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Window:
    """What the run did at `count` emulators over one measurement window."""

    count: int
    frames_per_s: float
    policy_lag_mean: float
    dropped_stale: int
    seconds: float


@dataclass(frozen=True)
class Decision:
    count: int
    reason: str


@dataclass
class Autoscaler:
    minimum: int = 1
    maximum: int = 16
    max_lag_mean: float = 5.0  # versions; beyond this the learner falls behind its actors
    tolerance: float = 0.03  # a count must beat another by this share to count as better
    reprobe: int = 10  # windows at the best count before climbing again
    cores: int | None = None  # below this many, probe fewer only while the learner is busy
    busy_lag: float = 1.0  # versions of policy lag from which the learner counts as busy
    fps: dict[int, list[float]] = field(default_factory=dict)
    ceiling: int | None = None  # the fewest counts that starved the learner, minus one
    held: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.minimum <= self.maximum:
            raise ValueError(f"autoscale bounds must satisfy 1 <= min <= max, got {self.minimum}, {self.maximum}")

    def _mean(self, n: int) -> float:
        return sum(self.fps[n]) / len(self.fps[n])

    def _better(self, a: int, b: int) -> bool:
        """Count a measured faster than count b by more than the tolerance (b unmeasured: True)."""
        return b not in self.fps or self._mean(a) > self._mean(b) * (1 + self.tolerance)

    def decide(self, w: Window) -> Decision:
        n = w.count
        top = min(self.maximum, self.ceiling if self.ceiling is not None else self.maximum)
        if w.dropped_stale > 0 or w.policy_lag_mean > self.max_lag_mean:
            self.fps.pop(n, None)
            self.held = 0
            why = (f"{w.dropped_stale} stale rollouts dropped" if w.dropped_stale > 0
                   else f"policy lag {w.policy_lag_mean:.1f} > {self.max_lag_mean:g}")
            if n > self.minimum:
                self.ceiling = n - 1
                return Decision(n - 1, f"learner starved at {n} ({why}, {w.frames_per_s:,.0f} frames/s)")
            return Decision(n, f"learner starved ({why}) but {n} is the minimum")
        self.fps.setdefault(n, []).append(w.frames_per_s)
        now = f"{n} gave {self._mean(n):,.0f} frames/s"
        if n + 1 <= top and n + 1 not in self.fps and self._better(n, n - 1):
            self.held = 0
            return Decision(n + 1, f"{now}; trying {n + 1}")
        if n - 1 >= self.minimum and n - 1 not in self.fps:  # untried below
            if self.cores is None or n - 1 >= self.cores or w.policy_lag_mean >= self.busy_lag:
                self.held = 0
                return Decision(n - 1, f"{now}; trying {n - 1}")
            now += (f" (the learner keeps up, policy lag {w.policy_lag_mean:.2f}: "
                    f"fewer than the {self.cores} cores not tried)")
        best = max(self.fps, key=self._mean)
        if best != n and self._better(best, n):
            self.held = 0
            return Decision(best, f"{now}; {best} gave {self._mean(best):,.0f}, the best measured")
        self.held += 1
        if self.held >= self.reprobe:
            self.fps = {n: self.fps[n][-1:]}
            self.ceiling, self.held = None, 0
            if n + 1 <= self.maximum:
                return Decision(n + 1, f"{now} for {self.reprobe} windows; probing {n + 1} again")
        return Decision(n, f"{now}, the best measured; keeping it")


def window_between(count: int, r0: dict[str, Any], r1: dict[str, Any]) -> Window:
    """The window between two metrics rows of a run at `count` emulators."""
    wall = max(r1["wall_s"] - r0["wall_s"], 1e-9)
    return Window(count, (r1["frames"] - r0["frames"]) / wall, float(r1["policy_lag_mean"] or 0.0),
                  int(r1["dropped_stale"] - r0["dropped_stale"]), wall)


def last_metrics_row(run_dir: Path) -> dict[str, Any] | None:
    """The newest complete row of the learner's metrics.jsonl (None before the first), read
    from the file's end: a run of hours has a long file."""
    path = run_dir / "metrics.jsonl"
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.seek(max(0, fh.tell() - 65536))
            tail = fh.read().decode(errors="replace")
    except OSError:
        return None
    pieces = tail.split("\n")[:-1]  # the last piece: empty, or a row still being written
    if size:
        pieces = pieces[1:]  # the first piece of a tail may start mid-row
    for line in reversed(pieces):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue
    return None


@dataclass
class Windows:
    """Measurement windows at a steady count: one opens `settle` seconds after the last change
    (and once every actor acts) at the newest metrics row, and closes `window` seconds of the
    learner's clock later; the next opens where it closed while the count stays."""

    settle: float = 10.0
    window: float = 30.0
    changed_at: float = 0.0
    start: dict[str, Any] | None = None

    def changed(self, now: float) -> None:
        """The count changed (or an actor restarted): what follows is measured afresh."""
        self.changed_at, self.start = now, None

    def next(self, now: float, row: dict[str, Any] | None, count: int, acting: bool = True) -> Window | None:
        """The window that `row` (the newest metrics row) closes at `count` actors, if any."""
        if row is None:
            return None
        if self.start is None:
            if now - self.changed_at >= self.settle and acting:
                self.start = row
            return None
        if row["wall_s"] - self.start["wall_s"] < self.window:
            return None
        w = window_between(count, self.start, row)
        self.start = row
        return w
