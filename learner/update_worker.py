"""The update worker: the one thread that owns the model and the optimizer.

Updates, checkpoint writes, weight encoding and snapshots of the weights run in this thread,
one at a time, so the event loop never waits on them and never reads a half-updated model.
What the worker computes is handed back; the event loop owns every counter and applies it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common import protocol
from common.config import Config, resume_changes
from common.model import state_to_numpy
from learner import checkpoint
from learner.batcher import Batch
from learner.trainer import Trainer, UpdateResult, finite_parameters

log = logging.getLogger("learner")


class UpdateWorker:
    """The trainer behind one worker thread: update, encode, checkpoint, resume."""

    def __init__(self, trainer: Trainer, cfg: Config, model_spec: dict[str, Any], spec_hash: str, session: str):
        self.trainer = trainer
        self.cfg = cfg
        self.model_spec, self.spec_hash, self.session = model_spec, spec_hash, session
        # one thread: updates and checkpoint writes never overlap and never block receiving
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="update")

    async def call(self, fn: Any, *args: Any) -> Any:
        """`fn(*args)` in the worker thread, after whatever runs there now."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True)

    # ------------------------------------------------------------------ resume
    def resume(self, run_dir: Path) -> dict[str, Any]:
        """Model, optimizer and counters from the newest loadable checkpoint. The settings given
        now apply (the learning rate and Adam's epsilon reach the optimizer), except those that
        fix the model and the data, which raise; one line says what changed."""
        found = checkpoint.load_latest(run_dir / "checkpoints", self.trainer.device)
        if found is None:
            raise checkpoint.RunDirError(f"--resume: no checkpoint in {run_dir / 'checkpoints'} loads")
        path, ckpt = found
        changed = resume_changes(ckpt.get("config", {}), self.cfg)  # names a refused flag first
        if ckpt.get("model_spec") != self.model_spec:
            raise ValueError(f"{path} was made for another environment or model; use another --run-dir")
        model, optimizer = self.trainer.model, self.trainer.optimizer
        model.load_state_dict(ckpt["model"])
        if not finite_parameters(model):
            raise ValueError(f"{path} holds non-finite weights; move it away to resume from an older one")
        optimizer.load_state_dict(ckpt["optimizer"])
        for group in optimizer.param_groups:  # the flags given now, not the saved ones
            group["lr"], group["eps"] = self.cfg.lr, self.cfg.adam_eps
        counters = dict(ckpt["counters"])
        self.trainer.frames_done = int(counters.get("frames", 0))  # --anneal-lr goes on from there
        log.info("resumed %s: %d updates, %d frames", path, counters.get("updates", 0), counters.get("frames", 0))
        if changed:
            print("--resume: settings changed from the checkpoint's: "
                  + ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in sorted(changed.items())), flush=True)
        return counters

    # ------------------------------------------------------------------ in the worker thread
    def encode_weights(self, version: int) -> bytes | None:
        """The model's weights as a message, or None when any is not finite (never published)."""
        state = state_to_numpy(self.trainer.model)
        if not all(np.isfinite(a).all() for a in state.values()):
            log.error("the model holds non-finite weights; they are not published")
            return None
        return protocol.encode_weights(state, version=version, spec_hash=self.spec_hash, session=self.session)

    def update(self, batch: Batch, version: int) -> tuple[UpdateResult, bytes | None]:
        """One update and, unless it was skipped, the new weights as `version`.
        It changes nothing the event loop owns: the loop applies the result."""
        result = self.trainer.update(batch)
        if self.cfg.update_delay:
            time.sleep(self.cfg.update_delay)
        if result.skipped is not None:
            return result, None
        weights = self.encode_weights(version)
        if weights is None:
            result.skipped = "weights"
        return result, weights

    def save_checkpoint(self, run_dir: Path, counters: dict[str, Any]) -> Path | None:
        """A checkpoint unless a weight is non-finite. A failed write (no file descriptors left,
        a full disk) is logged; the next one is tried."""
        if not finite_parameters(self.trainer.model):
            log.error("the model holds non-finite weights; checkpoint not written")
            return None
        payload = {"model": self.trainer.model.state_dict(), "optimizer": self.trainer.optimizer.state_dict(),
                   "counters": counters, "config": self.cfg.to_dict(), "model_spec": self.model_spec}
        try:
            return checkpoint.save(run_dir / "checkpoints", counters["updates"], payload, self.cfg.max_checkpoints)
        except OSError as exc:
            log.error("checkpoint at update %d not written: %s", counters["updates"], exc)
            return None

    def write_policy(self, path: Path, counters: dict[str, Any]) -> Path:
        """The current weights for an evaluation (no optimizer), written atomically."""
        payload = {"model": self.trainer.model.state_dict(), "config": self.cfg.to_dict(),
                   "model_spec": self.model_spec, "counters": counters}
        return checkpoint.write_atomic(path, payload)

    def state(self) -> dict[str, np.ndarray]:
        """A copy of the weights as numpy arrays (between updates)."""
        return state_to_numpy(self.trainer.model)


def seed_torch(cfg: Config, threads: int) -> None:
    """The learner's torch threads, and the seed of the initial weights and the minibatch order."""
    torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
