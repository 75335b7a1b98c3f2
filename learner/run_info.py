"""RUN_DIR/run_info.json: what made a run: the command line, the code's git commit, package versions."""

from __future__ import annotations

import json
import platform
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("retrofleet", "torch", "numpy", "pyzmq", "msgpack", "stable-retro", "gymnasium",
            "opencv-python-headless", "lz4", "tensorboard", "tqdm", "wandb")
ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def collect(argv: list[str] | None = None) -> dict[str, Any]:
    """This process's command line, the git commit of the code (None outside a git checkout;
    `dirty` when files differ from it), the versions of the packages that matter."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    argv = sys.argv if argv is None else argv
    return {
        "command": [Path(argv[0]).name, *argv[1:]] if argv else [],
        "cwd": str(Path.cwd()),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git": {"commit": commit, "dirty": bool(status) if commit else None, "branch": _git("branch", "--show-current")},
        "packages": versions,
    }


def write(run_dir: Path, argv: list[str] | None = None) -> Path:
    """Write run_info.json; a resumed run keeps what started it under `earlier` (oldest first)."""
    path = run_dir / "run_info.json"
    info = collect(argv)
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = None
    if isinstance(old, dict):
        info["earlier"] = [*old.pop("earlier", []), old]
    path.write_text(json.dumps(info, indent=1) + "\n")
    return path
