"""Reports: console line, metrics.jsonl, TensorBoard (and Weights & Biases with --wandb)."""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from pathlib import Path
from typing import Any

log = logging.getLogger("learner")
METRIC_FIELDS = ("wall_s", "frames", "steps", "fps", "episodes", "episodes_per_hour", "mean_return",
                 "updates", "policy_lag_mean", "policy_lag_max", "actors", "rejected_messages",
                 "dropped_stale")


class Metrics:
    """Counters of one run plus the windows the report needs."""

    def __init__(self, run_dir: Path, *, tensorboard: bool = True, start: dict[str, Any] | None = None,
                 return_window: int = 100, wandb_run: Any = None):
        start = start or {}
        self.frames = int(start.get("frames", 0))
        self.steps = int(start.get("steps", 0))
        self.episodes = int(start.get("episodes", 0))
        self.updates = int(start.get("updates", 0))
        self.rejected_messages = 0
        self.dropped_stale = 0
        self.returns: deque[float] = deque(start.get("recent_returns", []), maxlen=return_window)
        self.lags: list[int] = []
        self.started = time.monotonic()
        self.wall_offset = float(start.get("wall_s", 0.0))
        self._last = (self.started, self.frames, self.episodes)
        self.path = run_dir / "metrics.jsonl"
        self.wandb_run = wandb_run
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(run_dir / "tb"))
            except ImportError:  # tensorboard missing: metrics.jsonl still has everything
                self.writer = None

    def wall_s(self) -> float:
        return self.wall_offset + time.monotonic() - self.started

    def add_episode(self, ret: float) -> None:
        self.episodes += 1
        self.returns.append(ret)

    def mean_return(self) -> float | None:
        return sum(self.returns) / len(self.returns) if self.returns else None

    def counters(self) -> dict[str, Any]:
        return {"frames": self.frames, "steps": self.steps, "episodes": self.episodes,
                "updates": self.updates, "wall_s": self.wall_s(), "recent_returns": list(self.returns)}

    def report(self, actors: int, dropped_stale: int) -> dict[str, Any]:
        now = time.monotonic()
        t0, f0, e0 = self._last
        dt = max(now - t0, 1e-9)
        self._last = (now, self.frames, self.episodes)
        lags = self.lags
        self.lags = []
        row = {
            "wall_s": round(self.wall_s(), 2),
            "frames": self.frames,
            "steps": self.steps,
            "fps": round((self.frames - f0) / dt, 1),
            "episodes": self.episodes,
            "episodes_per_hour": round((self.episodes - e0) / dt * 3600, 1),
            "mean_return": None if not self.returns else round(self.mean_return(), 3),
            "updates": self.updates,
            "policy_lag_mean": round(sum(lags) / len(lags), 3) if lags else None,
            "policy_lag_max": max(lags) if lags else None,
            "actors": actors,
            "rejected_messages": self.rejected_messages,
            "dropped_stale": dropped_stale,
        }
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        keys = ("fps", "episodes_per_hour", "mean_return", "policy_lag_mean", "policy_lag_max",
                "actors", "rejected_messages", "dropped_stale", "updates")
        self._scalars({f"charts/{k}": row[k] for k in keys if row[k] is not None})
        if self.writer is not None:
            self.writer.flush()
        return row

    def _scalars(self, values: dict[str, float], step: int | None = None) -> None:
        """To TensorBoard at `step` (default: frames) and to W&B at the current frames."""
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, self.frames if step is None else step)
        if self.wandb_run is not None and values:
            self.wandb_run.log(values, step=self.frames)  # W&B steps never go back

    def log_update(self, stats: dict[str, float]) -> None:
        self._scalars(stats)

    def log_eval(self, row: dict[str, Any]) -> None:
        """An evaluation's return and length, and its GIF (TensorBoard's Images tab, W&B video)."""
        self._scalars({"eval/return": row["return"], "eval/length": row["length"]}, step=row["frames"])
        if self.writer is not None:
            from learner.eval_loop import tensorboard_gif

            tensorboard_gif(self.writer, "eval/video", row["gif"], row["frames"])
            self.writer.flush()
        if self.wandb_run is not None:
            import wandb

            try:
                self.wandb_run.log({"eval/video": wandb.Video(row["path"], format="gif")}, step=self.frames)
            except Exception as exc:  # the video is a nicety; the scalars above are logged
                log.warning("W&B did not take the evaluation video: %s", exc)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()


def console_line(row: dict[str, Any]) -> str:
    ret = "-" if row["mean_return"] is None else f"{row['mean_return']:.1f}"
    lag = "-" if row["policy_lag_mean"] is None else f"{row['policy_lag_mean']:.1f}/{row['policy_lag_max']}"
    return (f"[{row['wall_s']:7.0f}s] frames {row['frames']:>10,}  fps {row['fps']:>7,.0f}  "
            f"eps/h {row['episodes_per_hour']:>7,.0f}  return(100) {ret:>7}  updates {row['updates']:>6}  "
            f"lag {lag:>7}  actors {row['actors']}  rejected {row['rejected_messages']}  "
            f"stale {row['dropped_stale']}")
