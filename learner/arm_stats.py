"""What --exploration adaptive's bandits chose: per arm, its share of the recent episodes and their
mean return (console, metrics.jsonl, TensorBoard). An episode is the bandit's unit, a training
episode: in a game with lives (Atari) a lost life, where the run's mean return counts whole games."""

from __future__ import annotations

from collections import deque
from typing import Any


class ArmStats:
    """The arms of the last `window` episodes, all actors together."""

    def __init__(self, arms: tuple[float, ...], window: int):
        self.arms = arms
        self.recent: deque[tuple[int, float]] = deque(maxlen=window)

    def add(self, arm: int, ret: float) -> None:
        self.recent.append((arm, ret))

    def report(self) -> dict[str, Any]:
        """{"arms": {"eps=0.4": {"share": s, "mean_return": r or None}, ...}} over the window."""
        n = len(self.recent)
        out = {}
        for i, eps in enumerate(self.arms):
            returns = [r for a, r in self.recent if a == i]
            out[f"{i}:eps={eps:.3g}"] = {"share": round(len(returns) / n, 4) if n else 0.0,
                                         "mean_return": round(sum(returns) / len(returns), 3) if returns else None}
        return {"arms": out}


def arm_scalars(row: dict[str, Any]) -> dict[str, float]:
    """TensorBoard scalars of a report's arms: exploration/share_<arm>, exploration/return_<arm>."""
    out = {}
    for name, arm in row.get("arms", {}).items():
        out[f"exploration/share_{name}"] = arm["share"]
        if arm["mean_return"] is not None:
            out[f"exploration/return_{name}"] = arm["mean_return"]
    return out


def arms_console(row: dict[str, Any]) -> str:
    """The console's arm part: the share (%) of each arm, e.g. `arms 12/3/.../40`."""
    if "arms" not in row:
        return ""
    return "  arms% " + "/".join(f"{100 * a['share']:.0f}" for a in row["arms"].values())
