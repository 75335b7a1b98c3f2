"""Checkpoints: save atomically, keep the newest few, resume. Loaded with weights_only=True."""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("learner")
PATTERN = re.compile(r"ckpt_(\d+)\.pt$")


def checkpoint_path(directory: str | Path, updates: int) -> Path:
    return Path(directory) / f"ckpt_{updates}.pt"


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoints in `directory`, oldest first (by update count)."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := PATTERN.search(p.name))]
    return [p for _, p in sorted(found)]


def save(directory: str | Path, updates: int, payload: dict[str, Any], keep: int) -> Path:
    """Write to a temporary file, fsync, then rename: a crash never leaves a half-written ckpt."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    final = checkpoint_path(d, updates)
    for stale in d.glob(".ckpt_*.tmp"):  # left by a process killed mid-write; one learner per run dir
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".ckpt_", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
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
    for old in list_checkpoints(d)[:-keep]:
        old.unlink(missing_ok=True)
    return final


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    return torch.load(path, map_location=map_location, weights_only=True)


def load_latest(directory: str | Path, map_location: str | torch.device = "cpu") -> tuple[Path, dict] | None:
    """The newest checkpoint that loads; a damaged newest one falls back to the one before."""
    for path in reversed(list_checkpoints(directory)):
        try:
            return path, load(path, map_location)
        except Exception:  # a damaged file: say so and try the previous one
            log.warning("checkpoint %s does not load; trying an older one", path)
    return None
