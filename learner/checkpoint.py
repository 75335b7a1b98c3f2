"""Checkpoints: save atomically, keep the newest few, resume. Loaded with weights_only=True.

A run directory that holds checkpoints belongs to that run: a new learner starts there only
with --resume (continue it) or --overwrite (delete it first). Rotation sorts by update count,
so two runs sharing a directory would delete each other's checkpoints.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("learner")
PATTERN = re.compile(r"ckpt_(\d+)\.pt$")


class CheckpointError(ValueError):
    """A checkpoint problem, worded as one line for the user."""


class RunDirError(ValueError):
    """A run directory that cannot be used as asked, worded as one line."""


RUN_FILES = ("checkpoints", "metrics.jsonl", "actors.jsonl", "tb")


def claim_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> list[str]:
    """Check that a learner may start in `run_dir`; with `overwrite`, delete the earlier run's
    files first (their names are returned). RunDirError when it holds checkpoints and neither
    flag says what to do, or when --resume finds none."""
    found = list_checkpoints(run_dir / "checkpoints")
    if resume:
        if not found:
            raise RunDirError(f"--resume: no checkpoint in {run_dir / 'checkpoints'} to continue")
        return []
    if not found:
        return []
    if not overwrite:
        raise RunDirError(f"{run_dir} holds checkpoints of an earlier run (newest {found[-1].name}): "
                          "continue it with --resume, or delete it and start afresh with --overwrite")
    deleted = []
    for name in RUN_FILES:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        deleted.append(name)
    return deleted


def checkpoint_path(directory: str | Path, updates: int) -> Path:
    return Path(directory) / f"ckpt_{updates}.pt"


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoints in `directory`, oldest first (by update count)."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := PATTERN.search(p.name))]
    return [p for _, p in sorted(found)]


def write_atomic(path: str | Path, payload: dict[str, Any]) -> Path:
    """torch.save to a temporary file, fsync, then rename: `path` is never half-written. A full
    disk raises OSError (ENOSPC) with the temporary file removed and `path`'s directory as it was."""
    final = Path(path)
    d = final.parent
    d.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(payload, buf)  # in memory first: torch.save's own writer turns ENOSPC into a RuntimeError
    fd, tmp = tempfile.mkstemp(dir=d, prefix=f".{final.stem}_", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(buf.getbuffer())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        dir_fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return final


def save(directory: str | Path, updates: int, payload: dict[str, Any], keep: int) -> Path:
    """Write ckpt_<updates>.pt atomically and keep the newest `keep`: a crash never leaves a
    half-written checkpoint."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    for stale in d.glob(".ckpt_*.tmp"):  # left by a process killed mid-write; one learner per run dir
        stale.unlink(missing_ok=True)
    final = write_atomic(checkpoint_path(d, updates), payload)
    for old in list_checkpoints(d)[:-keep]:
        old.unlink(missing_ok=True)
    return final


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    return torch.load(path, map_location=map_location, weights_only=True)


def load_error(path: str | Path, exc: BaseException) -> str:
    """One line saying why `path` does not load."""
    text = str(exc).strip()
    msg = text.splitlines()[0] if text else type(exc).__name__
    if len(msg) > 160:
        msg = msg[:157] + "..."
    return f"{path} does not load (damaged, or not a checkpoint): {type(exc).__name__}: {msg}"


def load_latest(directory: str | Path, map_location: str | torch.device = "cpu") -> tuple[Path, dict] | None:
    """The newest checkpoint that loads; a damaged newest one is logged and the one before taken.

    None when `directory` holds no checkpoint; `CheckpointError` when it holds some and none loads.
    """
    found = list_checkpoints(directory)
    errors: list[str] = []
    for path in reversed(found):
        try:
            ckpt = load(path, map_location)
        except Exception as exc:  # a damaged file: say so and take the previous one
            errors.append(load_error(path, exc))
            continue
        for err in errors:
            log.warning("%s; using %s", err, path.name)
        return path, ckpt
    if not found:
        return None
    if len(found) == 1:
        raise CheckpointError(errors[0])
    raise CheckpointError(f"none of the {len(found)} checkpoints in {directory} loads; newest: {errors[0]}")


def find(run_dir_or_file: str | Path, checkpoint: str | Path | None = None,
         map_location: str | torch.device = "cpu") -> tuple[Path, dict[str, Any]]:
    """A checkpoint file, or a run directory's newest checkpoint that loads (or `checkpoint`:
    a path, or a file name in RUN_DIR/checkpoints). Raises `CheckpointError` (one line)."""
    given = Path(run_dir_or_file)
    if checkpoint is None and given.is_file():
        checkpoint, given = given, given.parent
    if checkpoint is not None:
        path = Path(checkpoint)
        in_run = given / "checkpoints" / path
        if not path.is_file() and not path.is_absolute() and in_run.is_file():
            path = in_run  # `--checkpoint ckpt_200.pt` names one of the run's checkpoints
        if not path.is_file():
            where = "" if path.is_absolute() else f" (nor in {given / 'checkpoints'})"
            raise CheckpointError(f"checkpoint not found: {checkpoint}{where}")
        try:
            return path, load(path, map_location)
        except Exception as exc:
            raise CheckpointError(load_error(path, exc)) from exc
    if not given.is_dir():
        raise CheckpointError(f"run directory not found: {given}")
    latest = load_latest(given / "checkpoints", map_location)
    if latest is None:
        raise CheckpointError(f"no checkpoint in {given / 'checkpoints'} (the learner writes ckpt_N.pt "
                              "every save_interval updates and when it stops)")
    return latest
