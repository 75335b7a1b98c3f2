"""`./launch.sh auto`: one-process actors on this machine, their number chosen by measurement.

    python -m fleet.local_actors --learner tcp://HOST:PORT --run-dir DIR [--start N] [--min 1]
        [--max M] [--window S] [--settle S] [--curve-dir D]

starts `--start` actors (default: one per core), then in turn lets the run settle, measures the
learner's frames/s, policy lag and stale drops over a window (from DIR/metrics.jsonl) and asks
`fleet.autoscale.Autoscaler` for the next count; it adds or stops actors to match. Every change
(and every kept count) is a line on stdout and a record in DIR/autoscale.jsonl with its reason.
Actors that die are started again after 2 s, as launch.sh does. SIGTERM/SIGINT stop them all.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from fleet.autoscale import Autoscaler, Decision, Windows, last_metrics_row

RESTART_S = 2.0
STOP_S = 10.0


class LocalActors:
    """Actor processes in slots 0..n-1; slot i logs to DIR/actor_i.log (and uses actorI's key)."""

    def __init__(self, learner: str, run_dir: Path, curve_dir: Path | None):
        self.learner, self.run_dir, self.curve_dir = learner, run_dir, curve_dir
        self.procs: list[subprocess.Popen] = []
        self.logs: list[tuple[Path, int]] = []  # each slot's log and its size when the process started
        self.dead_since: dict[int, float] = {}

    def _spawn(self, i: int) -> subprocess.Popen:
        cmd = [str(Path(sys.executable).parent / "actor"), "--learner", self.learner]
        if self.curve_dir is not None:
            cmd += ["--curve-secret", str(self.curve_dir / f"actor{i}.key_secret"),
                    "--curve-server-key", str(self.curve_dir / "learner.key")]
        log = self.run_dir / f"actor_{i}.log"
        start = log.stat().st_size if log.exists() else 0
        with open(log, "ab") as fh:
            p = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        if i < len(self.procs):
            self.procs[i], self.logs[i] = p, (log, start)
        else:
            self.procs.append(p)
            self.logs.append((log, start))
        return p

    def resize(self, n: int) -> None:
        while len(self.procs) < n:
            self._spawn(len(self.procs))
        while len(self.procs) > n:  # the newest go first
            p = self.procs.pop()
            self.logs.pop()
            self.dead_since.pop(len(self.procs), None)
            stop([p])

    def acting(self) -> bool:
        """Every actor has its first weights (its log says `; acting` since it started)."""
        for log, start in self.logs:
            try:
                with open(log, "rb") as fh:
                    fh.seek(start)
                    if b"; acting" not in fh.read():
                        return False
            except OSError:
                return False
        return True

    def supervise(self, now: float) -> list[str]:
        """Restart actors that exited (after RESTART_S); what happened, as console lines."""
        said = []
        for i, p in enumerate(self.procs):
            if p.poll() is None:
                continue
            if i not in self.dead_since:
                self.dead_since[i] = now
                said.append(f"actor {i} (pid {p.pid}) exited with code {p.returncode}; restarting in 2 s")
            elif now - self.dead_since[i] >= RESTART_S:
                del self.dead_since[i]
                self._spawn(i)
        return said


def stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM, then a kill for any still there after STOP_S."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + STOP_S
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def record(run_dir: Path, entry: dict) -> None:
    with open(run_dir / "autoscale.jsonl", "a") as fh:
        fh.write(json.dumps(entry) + "\n")
    change = f"{entry['from']} -> {entry['to']} actors" if entry["from"] != entry["to"] else f"{entry['to']} actors"
    print(f"autoscale: {change}: {entry['reason']}", flush=True)


def run(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    scaler = Autoscaler(minimum=args.min, maximum=args.max, max_lag_mean=args.max_lag, cores=os.cpu_count())
    actors = LocalActors(args.learner, run_dir, Path(args.curve_dir) if args.curve_dir else None)
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    parent = os.getppid()
    start, cores = min(max(args.start, args.min), args.max), os.cpu_count() or 1
    t0 = time.monotonic()
    why = f"starting from the cores ({cores})" if start == cores else f"starting at {start} (--start {args.start})"
    record(run_dir, {"wall_s": 0.0, "from": 0, "to": start, "reason": why})
    actors.resize(start)
    windows = Windows(settle=args.settle, window=args.window, changed_at=time.monotonic())
    try:
        while not stopping and os.getppid() == parent:  # an orphan (launch.sh gone) stops
            now = time.monotonic()
            for line in actors.supervise(now):
                print(f"autoscale: {line}", flush=True)
                windows.changed(now)  # a restart disturbs the window
            n = len(actors.procs)
            w = windows.next(now, last_metrics_row(run_dir), n, actors.acting())
            if w is not None:
                d: Decision = scaler.decide(w)
                record(run_dir, {"wall_s": round(now - t0, 1), "from": n, "to": d.count, "reason": d.reason,
                                 "frames_per_s": round(w.frames_per_s, 1),
                                 "policy_lag_mean": w.policy_lag_mean, "dropped_stale": w.dropped_stale,
                                 "window_s": round(w.seconds, 1)})
                if d.count != n:
                    actors.resize(d.count)
                    windows.changed(time.monotonic())
            time.sleep(0.25)
    finally:
        stop(actors.procs)
    return 0


def main(argv: list[str] | None = None) -> int:
    cores = os.cpu_count() or 1
    p = argparse.ArgumentParser(prog="python -m fleet.local_actors", description=__doc__.splitlines()[0])
    p.add_argument("--learner", required=True, help="the learner's control address tcp://HOST:PORT")
    p.add_argument("--run-dir", required=True, help="the learner's run directory (its metrics.jsonl)")
    p.add_argument("--start", type=int, default=cores, help="actors to start with (default: the cores, %(default)s)")
    p.add_argument("--min", type=int, default=1, help="fewest actors (default: %(default)s)")
    p.add_argument("--max", type=int, default=4 * cores, help="most actors (default: 4 a core, %(default)s)")
    p.add_argument("--window", type=float, default=30.0, help="seconds a count is measured (default: %(default)s)")
    p.add_argument("--settle", type=float, default=10.0,
                   help="seconds after a change (and every actor acting) before measuring (default: %(default)s)")
    p.add_argument("--max-lag", type=float, default=5.0,
                   help="mean policy lag (versions) above which the learner counts as starved (default: %(default)s)")
    p.add_argument("--curve-dir", help="CURVE keys: actor i uses actorI.key_secret")
    args = p.parse_args(argv)
    try:
        Autoscaler(minimum=args.min, maximum=args.max)
        if args.window <= 0 or args.settle < 0:
            raise ValueError(f"--window must be > 0 and --settle >= 0, got {args.window}, {args.settle}")
    except ValueError as exc:
        print(f"fleet.local_actors: error: {exc}", file=sys.stderr)
        return 2
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
