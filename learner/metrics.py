"""Reports: console line, metrics.jsonl, TensorBoard (and Weights & Biases with --wandb).

metrics.jsonl is valid JSON on every line: a value that is not a finite number is written as
null (and never reaches TensorBoard or W&B). Both files are opened once and kept open, so a
learner that runs out of file descriptors still reports; a failed write is logged and the
next one tried.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from learner.arm_stats import arm_scalars, arms_console

log = logging.getLogger("learner")

METRIC_FIELDS = ("wall_s", "frames", "steps", "fps", "episodes", "episodes_per_hour", "mean_return",
                 "updates", "policy_lag_mean", "policy_lag_max", "actors", "rejected_messages",
                 "dropped_stale", "skipped_updates", "unverified_episodes", "rate_limited", "fds")
CHARTS = ("fps", "episodes_per_hour", "mean_return", "policy_lag_mean", "policy_lag_max", "actors",
          "rejected_messages", "dropped_stale", "updates", "skipped_updates", "unverified_episodes",
          "rate_limited", "fds")


def open_fds() -> int | None:
    """File descriptors this process holds (None when even listing them needs one too many)."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # minus the one the listing itself opened
    except OSError:
        return None


def finite_or_none(value: Any) -> Any:
    """Numbers that JSON can hold: NaN and infinities become None (inside maps too: the
    fields a game family adds)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    return value


def json_line(row: dict[str, Any]) -> str:
    """One strict-JSON line (never NaN or Infinity)."""
    return json.dumps({k: finite_or_none(v) for k, v in row.items()}, allow_nan=False) + "\n"


class EventFile:
    """TensorBoard scalars in one event file, kept open for the run. (TensorBoard's own writer,
    without TensorFlow installed, reopens its file for every record, and its thread dies for
    good on the first EMFILE.)"""

    def __init__(self, directory: Path):
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter

        self._event, self._summary = event_pb2.Event, summary_pb2.Summary
        directory.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.0"
        self.records = RecordWriter(open(directory / name, "wb"))  # noqa: SIM115 (kept open)
        self._write(self._event(wall_time=time.time(), file_version="brain.Event:2"))
        self.flush()

    def _write(self, event: Any) -> None:
        self.records.write(event.SerializeToString())

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.add_summary(self._summary(value=[self._summary.Value(tag=tag, simple_value=float(value))]), step)

    def add_summary(self, summary: Any, step: int) -> None:
        self._write(self._event(wall_time=time.time(), step=int(step), summary=summary))

    def flush(self) -> None:
        self.records.flush()

    def close(self) -> None:
        self.records.close()


class Metrics:
    """Counters of one run plus the windows the report needs."""

    def __init__(self, run_dir: Path, *, tensorboard: bool = True, start: dict[str, Any] | None = None,
                 return_window: int = 100, wandb_run: Any = None):
        start = start or {}
        self.frames = int(start.get("frames", 0))
        self.steps = int(start.get("steps", 0))
        self.episodes = int(start.get("episodes", 0))
        self.updates = int(start.get("updates", 0))
        self.skipped_updates = int(start.get("skipped_updates", 0))
        self.unverified_episodes = int(start.get("unverified_episodes", 0))
        self.rejected_messages = 0
        self.dropped_stale = 0
        returns = [r for r in start.get("recent_returns", []) if math.isfinite(r)]
        self.returns: deque[float] = deque(returns, maxlen=return_window)
        self.lags: list[int] = []
        self.started = time.monotonic()
        self.wall_offset = float(start.get("wall_s", 0.0))
        self._last = (self.started, self.frames, self.episodes)
        self.path = run_dir / "metrics.jsonl"
        self.wandb_run = wandb_run
        self.file = open(self.path, "a", buffering=1)  # noqa: SIM115 (kept open for the run)
        self.write_failures = 0
        self.writer: EventFile | None = None
        if tensorboard:
            try:
                self.writer = EventFile(run_dir / "tb")
            except ImportError:  # tensorboard missing: metrics.jsonl still has everything
                self.writer = None

    def wall_s(self) -> float:
        return self.wall_offset + time.monotonic() - self.started

    def add_episode(self, ret: float, verified: bool = True) -> None:
        """One finished episode; only verified returns enter the mean (see learner/episodes.py)."""
        self.episodes += 1
        if verified and math.isfinite(ret):
            self.returns.append(ret)
        else:
            self.unverified_episodes += 1

    def mean_return(self) -> float | None:
        return sum(self.returns) / len(self.returns) if self.returns else None

    def counters(self) -> dict[str, Any]:
        return {"frames": self.frames, "steps": self.steps, "episodes": self.episodes,
                "updates": self.updates, "skipped_updates": self.skipped_updates,
                "unverified_episodes": self.unverified_episodes, "wall_s": self.wall_s(),
                "recent_returns": list(self.returns)}

    def report(self, actors: int, dropped_stale: int, *, family: dict[str, Any] | None = None,
               family_scalars: Callable[[dict[str, Any]], dict[str, float]] | None = None,
               **extra: Any) -> dict[str, Any]:
        """One row for the console, metrics.jsonl and TensorBoard; ``extra`` adds fields,
        ``family`` those of a game family's hooks, ``family_scalars`` turns them into
        TensorBoard scalars."""
        now = time.monotonic()
        t0, f0, e0 = self._last
        dt = max(now - t0, 1e-9)
        self._last = (now, self.frames, self.episodes)
        lags = self.lags
        self.lags = []
        mean = self.mean_return()
        row = {
            "wall_s": round(self.wall_s(), 2),
            "frames": self.frames,
            "steps": self.steps,
            "fps": round((self.frames - f0) / dt, 1),
            "episodes": self.episodes,
            "episodes_per_hour": round((self.episodes - e0) / dt * 3600, 1),
            "mean_return": None if mean is None else finite_or_none(round(mean, 3)),
            "updates": self.updates,
            "policy_lag_mean": round(sum(lags) / len(lags), 3) if lags else None,
            "policy_lag_max": max(lags) if lags else None,
            "actors": actors,
            "rejected_messages": self.rejected_messages,
            "dropped_stale": dropped_stale,
            "skipped_updates": self.skipped_updates,
            "unverified_episodes": self.unverified_episodes,
            **extra,
            **(family or {}),
        }
        row = {k: finite_or_none(v) for k, v in row.items()}
        try:
            self.file.write(json_line(row))
        except OSError as exc:  # disk full and the like: say so, keep training
            self.write_failures += 1
            if self.write_failures == 1 or self.write_failures % 100 == 0:
                log.error("cannot write %s (%s); %d reports lost so far", self.path, exc, self.write_failures)
        self._scalars({f"charts/{k}": row[k] for k in CHARTS if row.get(k) is not None})
        if family and family_scalars is not None:
            self._scalars(family_scalars(family))
        self._scalars(arm_scalars(row))
        return row

    def _scalars(self, values: dict[str, float], step: int | None = None) -> None:
        """To TensorBoard at `step` (default: frames) and to W&B at the current frames."""
        if self.writer is not None:
            try:
                for k, v in values.items():
                    if math.isfinite(v):
                        self.writer.add_scalar(k, v, self.frames if step is None else step)
                self.writer.flush()
            except OSError as exc:
                log.error("TensorBoard write failed: %s", exc)
        values = {k: v for k, v in values.items() if math.isfinite(v)}
        if self.wandb_run is not None and values:
            self.wandb_run.log(values, step=self.frames)  # W&B steps never go back

    def log_update(self, stats: dict[str, float]) -> None:
        self._scalars(stats)

    def log_eval(self, row: dict[str, Any]) -> None:
        """An evaluation's return and length, and its GIF (TensorBoard's Images tab, W&B video)."""
        self._scalars({"eval/return": row["return"], "eval/length": row["length"]}, step=row["frames"])
        if self.writer is not None:
            from learner.periodic_eval import tensorboard_gif

            try:
                tensorboard_gif(self.writer, "eval/video", row["gif"], row["frames"])
                self.writer.flush()
            except OSError as exc:
                log.error("TensorBoard write failed: %s", exc)
        if self.wandb_run is not None:
            import wandb

            try:
                self.wandb_run.log({"eval/video": wandb.Video(row["path"], format="gif")}, step=self.frames)
            except Exception as exc:  # the video is a nicety; the scalars above are logged
                log.warning("W&B did not take the evaluation video: %s", exc)

    def log_scalars(self, values: dict[str, float], step: int | None = None) -> None:
        """Scalars of a game family's evaluation (TensorBoard at `step`, default frames)."""
        self._scalars(values, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()
        self.file.close()


def console_line(row: dict[str, Any], window: int) -> str:
    """The plain status line of a report; `window` is --return-window (the mean return's episodes)."""
    ret = "-" if row["mean_return"] is None else f"{row['mean_return']:.1f}"
    lag = "-" if row["policy_lag_mean"] is None else f"{row['policy_lag_mean']:.1f}/{row['policy_lag_max']}"
    skipped = f"  skipped {row['skipped_updates']}" if row.get("skipped_updates") else ""
    games = (f"games/s {row['games_per_s']:>6.1f}  moves/s {row['moves_per_s']:>7,.0f}  "
             f"illegal {row['illegal_moves']}  ") if "games_per_s" in row else ""
    return (f"[{row['wall_s']:7.0f}s] frames {row['frames']:>10,}  fps {row['fps']:>7,.0f}  "
            f"eps/h {row['episodes_per_hour']:>7,.0f}  return({window}) {ret:>7}  {games}updates {row['updates']:>6}  "
            f"lag {lag:>7}  actors {row['actors']}  rejected {row['rejected_messages']}  "
            f"stale {row['dropped_stale']}{skipped}{arms_console(row)}")
