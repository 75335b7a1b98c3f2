"""What a game family may add to the generic learner, and the factory that picks it.

The learner's rooms call these hooks and never ask which game runs: a family that needs nothing
more (Atari, stable-retro, Gymnasium) gets ``NoHooks``; a two-player game (ConnectX) brings its
league, snapshots and board evaluation through the same calls. Hooks are duck-typed
(``LearnerHooks`` is a Protocol), so a family's wing never imports learner/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from common.config import Config
from common.families import family_for
from common.protocol import ProtocolError, Rollout
from learner.episodes import Episode
from learner.metrics import Metrics
from learner.periodic_eval import EvalLoop, FamilyEvalLoop


class LearnerHooks(Protocol):
    """The learner-side calls a game family answers (``NoHooks`` answers each with nothing);
    the two-player wing's are common/connectx/hooks.py."""

    counters_key: str  # where a checkpoint's counters keep this family's counters

    def on_rollout(self, r: Rollout, episodes: list[Episode]) -> None:
        """A validated rollout and its episodes as the episode book checked them."""

    def on_rejected(self, exc: ProtocolError) -> None:
        """A rollout was rejected for `exc`."""

    def messages(self) -> list[bytes]:
        """Messages a publish tick sends after the weights."""

    def due(self) -> bool:
        """Whether a snapshot of the current policy should be taken now (`add_snapshot`)."""

    def add_snapshot(self, state: dict[str, np.ndarray]) -> str:
        """Keep a snapshot of the policy's weights; its name."""

    def report(self) -> dict[str, Any] | None:
        """Fields this family adds to each metrics row."""

    def scalars(self, row: dict[str, Any]) -> dict[str, float]:
        """TensorBoard scalars of the fields `report` added."""

    def counters(self) -> dict[str, Any] | None:
        """What a checkpoint keeps of this family (given back on resume)."""

    def eval_args(self) -> list[str]:
        """`learner evaluate` flags of this family's evaluation."""

    def eval_row(self, result: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
        """The row of an evaluation's result."""

    def on_eval(self, row: dict[str, Any]) -> dict[str, float]:
        """An evaluation's row (kept for the next report); its TensorBoard scalars."""


class NoHooks:
    """A family with nothing to add: one-player games (their evaluation is EvalLoop's own)."""

    counters_key = "family"

    def on_rollout(self, r: Rollout, episodes: list[Episode]) -> None:
        pass

    def on_rejected(self, exc: ProtocolError) -> None:
        pass

    def messages(self) -> list[bytes]:
        return []

    def due(self) -> bool:
        return False

    def add_snapshot(self, state: dict[str, np.ndarray]) -> str:
        raise NotImplementedError("this family takes no snapshots")

    def report(self) -> dict[str, Any] | None:
        return None

    def scalars(self, row: dict[str, Any]) -> dict[str, float]:
        return {}

    def counters(self) -> dict[str, Any] | None:
        return None


def hooks_for(cfg: Config, run_dir: Path, model_spec: dict[str, Any], spec_hash: str, session: str,
              counters: dict[str, Any]) -> LearnerHooks | NoHooks:
    """The hooks of the configured environment's family (common/families); `counters` are a
    resumed run's."""
    hooks = family_for(cfg.env).learner_hooks(cfg, run_dir, model_spec, spec_hash, session, counters)
    return NoHooks() if hooks is None else hooks


def eval_loop(hooks: LearnerHooks | NoHooks, run_dir: Path, cfg: Config, metrics: Metrics) -> EvalLoop:
    """The --eval-interval loop: a greedy episode with its GIF, or the family's own evaluation."""
    if isinstance(hooks, NoHooks):
        return EvalLoop(run_dir, interval_min=cfg.eval_interval, max_steps=cfg.eval_max_steps,
                        record=metrics.log_eval)

    def record(row: dict[str, Any]) -> None:  # TensorBoard now, metrics.jsonl with the next report
        metrics.log_scalars(hooks.on_eval(row), step=row["frames"])

    return FamilyEvalLoop(run_dir, hooks, interval_min=cfg.eval_interval, record=record)
