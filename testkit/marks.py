"""Policy snapshots at equal frame counts (issue 20): a chaos run and its undisturbed twin each
keep a copy of their newest checkpoint the first time their frames pass every multiple of
`every` (benchmarks.chaos --mark-every), and benchmarks.chaos_marks plays each copy afterwards.
A played policy measures what was learned by then; the learner's windowed mean return also
counts which episodes happened to finish, and faults cut and restart episodes."""

from __future__ import annotations

import shutil
from pathlib import Path

from learner import checkpoint


def mark_name(run: str, mark: int) -> str:
    return f"{run}_{mark}.pt"


class MarkKeeper:
    """Copies `run_dir`'s newest checkpoint to `dest`/{run}_{mark}.pt when a sample of its frames
    first reaches `mark` (one copy per crossing: a jump over several marks keeps the lowest
    mark's name, the file is the same). A copy that fails (a checkpoint rotated away while it
    was copied, a full disk) is tried again at the next sample."""

    def __init__(self, dest: Path, every: int, runs: list[str]):
        if every <= 0:
            raise ValueError("every must be positive")
        self.dest, self.every = Path(dest), every
        self.next = dict.fromkeys(runs, every)
        self.kept: dict[str, list[int]] = {r: [] for r in runs}

    def check(self, run: str, run_dir: Path, frames: int) -> Path | None:
        mark = self.next[run]
        if frames < mark:
            return None
        newest = checkpoint.list_checkpoints(Path(run_dir) / "checkpoints")
        if not newest:
            return None
        self.dest.mkdir(parents=True, exist_ok=True)
        target = self.dest / mark_name(run, mark)
        part = target.with_name("." + target.name)  # renamed when whole: never a half copy under the name
        try:
            shutil.copyfile(newest[-1], part)
            part.replace(target)
        except OSError:
            part.unlink(missing_ok=True)
            return None
        self.kept[run].append(mark)
        self.next[run] = (frames // self.every + 1) * self.every
        return target


def marks_of(dest: Path, run: str) -> dict[int, Path]:
    """The snapshots a MarkKeeper left for `run`, by mark."""
    found = {}
    for p in Path(dest).glob(f"{run}_*.pt"):
        tail = p.stem[len(run) + 1:]
        if tail.isdigit():
            found[int(tail)] = p
    return dict(sorted(found.items()))
