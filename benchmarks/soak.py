"""Soak benchmark (not a test): a slow learner and its actors for minutes; does memory stay flat?

    python -m benchmarks.soak                                  # 10 minutes, CartPole, 2 actors
    python -m benchmarks.soak --seconds 600 --env Airstriker-Genesis-v0 --update-delay 0.5

Samples the RSS of the learner and each actor every --every seconds into RUN_DIR/soak.csv and
prints a summary: RSS after the warm-up, the peak after it, and the growth. Exit code 1 when a
process grew by more than --limit-mb after the warm-up or died.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from testkit.processes import BIN, free_base_port, stop_processes
from testkit.run_files import last_metrics


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=600)
    p.add_argument("--warmup", type=float, default=60, help="seconds before the baseline sample")
    p.add_argument("--every", type=float, default=5)
    p.add_argument("--actors", type=int, default=2)
    p.add_argument("--env", default="CartPole-v1")
    p.add_argument("--update-delay", type=float, default=0.5)
    p.add_argument("--limit-mb", type=float, default=50)
    p.add_argument("--run-dir", default="")
    args = p.parse_args(argv)
    run = Path(args.run_dir or tempfile.mkdtemp(prefix="soak-"))
    run.mkdir(parents=True, exist_ok=True)
    port = free_base_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = [subprocess.Popen([str(BIN / "learner"), "--env", args.env, "--port", str(port),
                               "--run-dir", str(run / "run"), "--update-delay", str(args.update_delay),
                               "--quiet"], stdout=open(run / "learner.log", "wb"),
                              stderr=subprocess.STDOUT, env=env)]
    time.sleep(5)
    for i in range(args.actors):
        procs.append(subprocess.Popen([str(BIN / "actor"), "--learner", f"tcp://127.0.0.1:{port}"],
                                      stdout=open(run / f"actor_{i}.log", "wb"),
                                      stderr=subprocess.STDOUT, env=env))
    names = ["learner"] + [f"actor_{i}" for i in range(args.actors)]
    start = time.monotonic()
    base: list[float] | None = None
    peak = [0.0] * len(procs)
    died = False
    with open(run / "soak.csv", "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["t", *names, "updates", "frames", "actors"])
        try:
            while time.monotonic() - start < args.seconds:
                time.sleep(args.every)
                if any(pr.poll() is not None for pr in procs):
                    died = True
                    print("a process died", [pr.returncode for pr in procs])
                    break
                rss = [psutil.Process(pr.pid).memory_info().rss / 2**20 for pr in procs]
                m = last_metrics(run / "run")
                t = time.monotonic() - start
                out.writerow([round(t, 1), *(round(r, 1) for r in rss), m.get("updates"), m.get("frames"),
                              m.get("actors")])
                fh.flush()
                if t >= args.warmup:
                    if base is None:
                        base = rss
                    peak = [max(a, b) for a, b in zip(peak, rss, strict=True)]
                print(f"[{t:6.0f}s] rss MB " + " ".join(f"{n}={r:.0f}" for n, r in zip(names, rss, strict=True))
                      + f" | updates {m.get('updates')} frames {m.get('frames')} actors {m.get('actors')}",
                      flush=True)
        finally:
            stop_processes(procs)
    if base is None:
        print("run shorter than the warm-up: no verdict")
        return 1
    growth = [pk - b for pk, b in zip(peak, base, strict=True)]
    for n, b, g in zip(names, base, growth, strict=True):
        print(f"{n}: {b:.0f} MB after warm-up, grew {g:+.1f} MB")
    print(f"samples in {run / 'soak.csv'}")
    return 1 if died or max(growth) > args.limit_mb else 0


if __name__ == "__main__":
    sys.exit(main())
