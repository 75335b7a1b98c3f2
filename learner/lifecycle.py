"""A run's life: its directory, what it resumes from, when it ends, what it reports.

Claims the run directory (--resume, --overwrite), writes config.toml and the run's provenance,
opens the metrics (metrics.jsonl, TensorBoard, W&B) and the console, counts the frames and
episodes of accepted rollouts, and decides the end: --total-frames, --stop-at-return,
--max-minutes (`reached_end`), or a signal (`stop` alone).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.config import Config, dump_toml
from common.protocol import Rollout
from learner import checkpoint, run_info
from learner.arm_stats import ArmStats
from learner.episodes import Episode
from learner.metrics import Metrics, open_fds
from learner.progress import Console

log = logging.getLogger("learner")
TICK_S = 0.5  # the progress bar moves between reports


class Lifecycle:
    """The run directory, the metrics and console, and the run's end."""

    def __init__(self, cfg: Config, run_dir: Path, resume: Callable[[], dict[str, Any]], *, n_arms: int = 0):
        """Claims `run_dir`; with --resume, `resume()` loads the newest checkpoint and gives its counters.
        `n_arms`: the exploration bandit's arms (--exploration adaptive), whose episodes are reported."""
        self.cfg, self.run_dir = cfg, run_dir
        deleted = checkpoint.claim_run_dir(run_dir, resume=cfg.resume, overwrite=cfg.overwrite)
        if deleted:
            print(f"--overwrite: deleted the earlier run's {', '.join(deleted)} in {run_dir}", flush=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.start: dict[str, Any] = resume() if cfg.resume else {}
        (run_dir / "config.toml").write_text(dump_toml(cfg))
        run_info.write(run_dir)
        wandb_run = None
        if cfg.wandb:
            from learner import wandb_log

            wandb_run = wandb_log.start(cfg, run_dir)
        self.metrics = Metrics(run_dir, start=self.start, return_window=cfg.return_window, wandb_run=wandb_run)
        self.console = Console(cfg)
        self.stop = asyncio.Event()
        self.reached_end = False  # --total-frames, --stop-at-return or --max-minutes, not a signal
        self.arm_stats = ArmStats(cfg.arms(), cfg.return_window) if n_arms else None

    def end(self) -> None:
        """The run reached its end: stop, and evaluate the final checkpoint."""
        self.reached_end = True
        self.stop.set()

    def count(self, r: Rollout, episodes: list[Episode], frame_skip: int) -> None:
        """An accepted rollout's steps, frames and episodes; --stop-at-return."""
        m = self.metrics
        m.steps += r.steps
        m.frames += r.steps * frame_skip
        for ep in episodes:
            m.add_episode(ep.ret, ep.verified)
        if self.arm_stats is not None:
            # per training episode, the bandit's unit: with lives (Atari) a lost life, where
            # `episodes` holds whole games (a game's lives may be played with different arms)
            for sent in r.episodes:
                self.arm_stats.add(sent["arm"], float(sent["return"]))
        target = self.cfg.stop_at_return
        if target and r.episodes and len(m.returns) == m.returns.maxlen and m.mean_return() >= target:
            if not self.stop.is_set():
                self.console.say(f"reached --stop-at-return {target:g}: mean of the last {len(m.returns)} "
                                 f"episodes {m.mean_return():.1f} at {m.steps:,} steps, {m.wall_s():.1f} s")
            self.end()

    def check_frames(self) -> None:
        """After an update: --total-frames."""
        if self.cfg.total_frames and self.metrics.frames >= self.cfg.total_frames:
            log.info("reached --total-frames %d", self.cfg.total_frames)
            self.end()

    def report(self, actors: int, dropped_stale: int, rate_limited: int, family: dict[str, Any] | None,
               family_scalars: Callable[[dict[str, Any]], dict[str, float]]) -> dict:
        arms = self.arm_stats.report() if self.arm_stats is not None else {}
        row = self.metrics.report(actors, dropped_stale, rate_limited=rate_limited, fds=open_fds(), family=family,
                                  family_scalars=family_scalars, **arms)
        self.console.report(row)
        return row

    def eval_counters(self) -> dict[str, Any]:
        return {"wall_s": round(self.metrics.wall_s(), 2), "frames": self.metrics.frames,
                "updates": self.metrics.updates}

    async def tick_task(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self.console.tick(self.metrics.frames, self.metrics.mean_return())

    async def max_minutes_task(self) -> None:
        await asyncio.sleep(self.cfg.max_minutes * 60.0)
        self.console.say(f"reached --max-minutes {self.cfg.max_minutes:g}")
        self.end()
