"""Progress toward the end of a run: a tqdm bar with rate and ETA on a terminal.

A run with an end (--total-frames, --max-minutes, --stop-at-return) shows a bar when its stdout
is a terminal; otherwise (a log file, a pipe) the learner prints its plain status line and
nothing here writes a control character. The bar follows the first of: frames toward
--total-frames, seconds toward --max-minutes, the mean return toward
--stop-at-return (with frames: the rate in frames/s and the ETA; otherwise the time left); the
other figures of the status line (return, updates, lag, actors, fps) ride along after it.

`python -m learner.progress RUN_DIR` draws the same bar from a running learner's config.toml
and metrics.jsonl: launch.sh uses it when its own output is a terminal.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from common.config import FIELDS, Config, load_toml
from learner.metrics import console_line


def goal(cfg: Config) -> tuple[str, float] | None:
    """What the bar counts and its total: ('frames', N), ('minutes', M), ('return', R), or None."""
    if cfg.total_frames:
        return "frames", float(cfg.total_frames)
    if cfg.max_minutes:
        return "minutes", float(cfg.max_minutes)
    if cfg.stop_at_return:
        return "return", float(cfg.stop_at_return)
    return None


def wants_bar(cfg: Config, stream: TextIO) -> bool:
    """A bar only for a run with an end, on a terminal."""
    isatty = getattr(stream, "isatty", None)
    return goal(cfg) is not None and bool(isatty and isatty())


def postfix(row: dict[str, Any]) -> str:
    """The status line's figures that follow the bar."""
    ret = "-" if row.get("mean_return") is None else f"{row['mean_return']:.1f}"
    lag = "-" if row.get("policy_lag_mean") is None else f"{row['policy_lag_mean']:.1f}/{row['policy_lag_max']}"
    return (f"return {ret}  updates {row.get('updates', 0)}  lag {lag}  actors {row.get('actors', 0)}"
            f"  fps {row.get('fps', 0):,.0f}")


BAR_FORMATS = {  # frames: with their rate; the clock and the return: how far, and the time left
    "frames": "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]",
    "minutes": "{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]",
    "return": "{l_bar}{bar}| {n:.1f}/{total:.1f} mean return [{elapsed}<{remaining}{postfix}]",
}


def _size(stream: TextIO) -> tuple[int, int]:
    """The terminal's columns and rows; 120 x 24 where it reports none (a fresh pty says 0 x 0,
    and tqdm hides a bar on a terminal of 0 rows)."""
    import os

    try:
        cols, rows = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError, AttributeError):
        cols, rows = 0, 0
    return cols or 120, rows or 24


class ProgressBar:
    """A tqdm bar toward the run's goal; `update` with counters or a metrics row."""

    def __init__(self, cfg: Config, stream: TextIO, *, start_frames: int = 0):
        from tqdm import tqdm

        what = goal(cfg)
        if what is None:
            raise ValueError("a progress bar needs --total-frames, --max-minutes or --stop-at-return")
        self.kind, total = what
        self.started = time.monotonic()
        cols, rows = _size(stream)
        if self.kind == "minutes":
            total *= 60.0  # counted in seconds
        unit = {"frames": "frames", "minutes": "s", "return": "return"}[self.kind]
        # `initial` keeps a resumed run's rate honest: only this session's frames count toward it
        self.bar = tqdm(total=total, initial=start_frames if self.kind == "frames" else 0, unit=unit,
                        unit_scale=self.kind == "frames", file=stream, ncols=cols, nrows=rows,
                        smoothing=0.1, mininterval=0.5,
                        bar_format=BAR_FORMATS[self.kind])
        self.row: dict[str, Any] = {}

    def update(self, frames: int, mean_return: float | None, row: dict[str, Any] | None = None) -> None:
        if row is not None:
            self.row = row
        if self.kind == "frames":
            n = float(frames)
        elif self.kind == "minutes":
            n = float(int(time.monotonic() - self.started))
        else:
            n = max(0.0, mean_return or 0.0)
        n = min(n, self.bar.total)
        if n != self.bar.n:
            self.bar.update(n - self.bar.n)
        self.bar.set_postfix_str(postfix({**self.row, "mean_return": mean_return}), refresh=False)
        self.bar.refresh()

    def write(self, line: str) -> None:
        """A line above the bar."""
        self.bar.write(line)

    def close(self) -> None:
        self.bar.close()


class Console:
    """The learner's console: the plain status line per report, or the bar on a terminal when
    the run has an end. Lines said while a bar shows go above it (log records too)."""

    def __init__(self, cfg: Config, stream: TextIO | None = None):
        self.cfg = cfg
        self.stream = stream or sys.stdout
        self.bar: ProgressBar | None = None
        self._redirect: Any = None

    def start(self, frames: int) -> None:
        if self.cfg.quiet or not wants_bar(self.cfg, self.stream):
            return
        from tqdm.contrib.logging import logging_redirect_tqdm

        self.bar = ProgressBar(self.cfg, self.stream, start_frames=frames)
        self._redirect = logging_redirect_tqdm()
        self._redirect.__enter__()

    def report(self, row: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.update(row["frames"], row["mean_return"], row)
        elif not self.cfg.quiet:
            print(console_line(row, self.cfg.return_window), file=self.stream, flush=True)

    def tick(self, frames: int, mean_return: float | None) -> None:
        """Between reports: the bar moves (frames, time), the figures stay."""
        if self.bar is not None:
            self.bar.update(frames, mean_return)

    def say(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self._redirect.__exit__(None, None, None)
            self.bar = None


# ---------------------------------------------------------------------------- follow a run


def _rows(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """Complete lines of metrics.jsonl after `offset`; the new offset."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1
    rows = [json.loads(line) for line in data[:end].splitlines() if line.strip()]
    return rows, offset + end


def _saved_config(run_dir: Path) -> Config:
    saved = load_toml(run_dir / "config.toml")
    return Config(**{k: v for k, v in saved.items() if k in FIELDS})


def follow(run_dir: Path, stream: TextIO, interval: float = 0.5) -> int:
    """Draw the bar of a running learner from its run directory until stopped (SIGTERM)."""
    cfg = _saved_config(run_dir)
    if not wants_bar(cfg, stream):
        return 0
    rows, offset = _rows(run_dir / "metrics.jsonl", 0)
    last = rows[-1] if rows else {}
    bar = ProgressBar(cfg, stream, start_frames=int(last.get("frames", 0)))
    try:
        while True:
            rows, offset = _rows(run_dir / "metrics.jsonl", offset)
            if rows:
                last = rows[-1]
            bar.update(int(last.get("frames", 0)), last.get("mean_return"), last)
            time.sleep(interval)
    except KeyboardInterrupt:
        return 0
    finally:
        bar.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m learner.progress",
                                description="Progress bar of a running learner, from its run directory.")
    p.add_argument("run_dir")
    p.add_argument("--check", action="store_true",
                   help="exit 0 if the run would show a bar here (an end, stdout a terminal), else 1")
    args = p.parse_args(argv)
    if args.check:
        return 0 if wants_bar(_saved_config(Path(args.run_dir)), sys.stdout) else 1
    import signal

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a clean close of the bar
    return follow(Path(args.run_dir), sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
