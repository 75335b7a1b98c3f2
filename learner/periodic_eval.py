"""Evaluation while training (--eval-interval minutes): watch a run as it learns.

Every interval the learner's worker thread writes the current weights to RUN_DIR/eval/policy.pt
(atomically, between updates), and `learner evaluate` plays one greedy episode of it in a child
process at a lower CPU priority (stable-retro allows one emulator per process, and the learner
must never wait on an emulator): RUN_DIR/eval/eval_<updates>.gif, a line in
RUN_DIR/eval/evals.jsonl, and `eval/return`, `eval/length` and the GIF (`eval/video`, in the
Images tab) in TensorBoard. One evaluation at a time: the next one starts an interval after the
previous one ended. When the run reaches its end (--total-frames, --stop-at-return,
--max-minutes) one more plays the final checkpoint (eval_final.gif); Ctrl-C stops without it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("learner")
# Below the learner, above launch.sh's actors (nice 10): the learner never waits on an evaluation,
# and an evaluation ends in seconds even when actors keep every core busy.
EVAL_NICE = 5
KEEP_GIFS = 20  # newest evaluation GIFs kept; evals.jsonl keeps every return


def tensorboard_gif(writer: Any, tag: str, gif: bytes, step: int) -> None:
    """An animated GIF in TensorBoard's Images tab (what SummaryWriter.add_video writes, without
    re-encoding the frames: the image summary carries the GIF's own bytes)."""
    import io

    from PIL import Image
    from tensorboard.compat.proto.summary_pb2 import Summary

    with Image.open(io.BytesIO(gif)) as img:
        width, height = img.size
    image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=gif)
    writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)


def _lower_priority() -> None:
    os.nice(EVAL_NICE)


class EvalLoop:
    """Runs `learner evaluate` children for a learner and records what they report."""

    def __init__(self, run_dir: Path, *, interval_min: float, max_steps: int,
                 record: Callable[[dict[str, Any]], None]):
        self.dir = run_dir / "eval"
        self.interval = interval_min * 60.0
        self.max_steps = max_steps
        self.record = record  # the learner's: TensorBoard, W&B
        self.proc: asyncio.subprocess.Process | None = None

    def _args(self, partial: Path) -> list[str]:
        """`learner evaluate` flags after the checkpoint: one greedy episode, its GIF."""
        return ["--episodes", "1", "--greedy", "--max-steps", str(self.max_steps), "--video", str(partial),
                "--json"]

    def _finish(self, result: dict[str, Any], base: dict[str, Any], partial: Path, gif: Path) -> dict[str, Any]:
        """The row of a successful evaluation (written to evals.jsonl and recorded)."""
        partial.replace(gif)
        row = {**base, "return": result["returns"][0], "length": result["lengths"][0], "video": gif.name}
        with open(self.dir / "evals.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")
        self.record({**row, "gif": gif.read_bytes(), "path": str(gif)})
        self._rotate()
        log.info("evaluation %s: return %.1f in %d steps; %s", base["eval"], row["return"], row["length"], gif)
        return row

    async def run_once(self, policy_file: Path, name: str, counters: dict[str, Any]) -> dict[str, Any] | None:
        """One evaluation of `policy_file` in a child process; its result row, or None."""
        self.dir.mkdir(parents=True, exist_ok=True)
        gif = self.dir / f"eval_{name}.gif"
        partial = self.dir / f".eval_{name}.part.gif"  # renamed once the evaluation succeeded
        cmd = [sys.executable, "-m", "learner", "evaluate", str(self.dir.parent), "--checkpoint",
               str(policy_file), *self._args(partial)]
        started = time.monotonic()
        proc = self.proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            preexec_fn=_lower_priority, env={**os.environ, "OMP_NUM_THREADS": "1"})
        try:
            out, err = await proc.communicate()
        except asyncio.CancelledError:  # the learner is stopping: so does the evaluation
            self.stop()
            partial.unlink(missing_ok=True)
            raise
        finally:
            self.proc = None
        code = proc.returncode
        if code != 0:
            partial.unlink(missing_ok=True)
            tail = (err or out).decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            log.warning("evaluation %s failed (exit %s): %s", name, code, tail[0])
            return None
        try:
            result = json.loads(out.decode().strip().splitlines()[-1])
            base = {**counters, "eval": name, "seconds": round(time.monotonic() - started, 2)}
            return self._finish(result, base, partial, gif)
        except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:  # never stops training
            log.warning("evaluation %s: no result recorded: %s: %s", name, type(exc).__name__, exc)
            return None

    def _rotate(self) -> None:
        gifs = sorted(self.dir.glob("eval_[0-9]*.gif"), key=lambda p: int(p.stem.split("_")[1]))
        for old in gifs[:-KEEP_GIFS]:
            old.unlink(missing_ok=True)

    async def task(self, snapshot: Callable[[], Any], counters: Callable[[], dict[str, Any]]) -> None:
        """Every interval: `await snapshot()` (writes eval/policy.pt), then evaluate it."""
        while True:
            await asyncio.sleep(self.interval)
            c = counters()
            try:
                path = await snapshot()
            except OSError as exc:  # a full disk, say: training goes on
                log.warning("evaluation at %s updates skipped: %s", c["updates"], exc)
                continue
            await self.run_once(path, str(c["updates"]), c)

    def stop(self) -> None:
        """Ends a running evaluation (the learner is stopping)."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()


class FamilyEvalLoop(EvalLoop):
    """A game family's evaluation (its hooks' ``eval_args`` for `learner evaluate`, ``eval_row``
    to read the result), in the child process."""

    def __init__(self, run_dir: Path, hooks: Any, *, interval_min: float,
                 record: Callable[[dict[str, Any]], None]):
        super().__init__(run_dir, interval_min=interval_min, max_steps=1, record=record)
        self.hooks = hooks

    def _args(self, partial: Path) -> list[str]:
        return self.hooks.eval_args()

    def _finish(self, result: dict[str, Any], base: dict[str, Any], partial: Path, gif: Path) -> dict[str, Any]:
        row = self.hooks.eval_row(result, base)
        with open(self.dir / "evals.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")
        self.record(row)
        log.info("evaluation %s: %s", base["eval"], ", ".join(
            f"{k} {v:.3f}" for k, v in row.items() if k not in base and isinstance(v, float)))
        return row
