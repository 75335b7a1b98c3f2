"""What a setting costs in frames/s: `./launch.sh N` with each variant, interleaved, same session.

    python -m benchmarks.bench_cost --actors 2 --seconds 60 --rounds 2 \\
        --variant "ff=" --variant "lstm=--model lstm --frame-stack 1" \\
        --variant "none=--exploration none" --variant "adaptive=--exploration adaptive"

    python -m benchmarks.bench_cost --warmup 90 --variant "host2=@2" --variant "proc2=@2 --actor-mode process" \
        --variant "proc3=@3 --actor-mode process" --variant "auto=@auto"    # issue 19: auto against fixed counts

A variant's flags may open with `@N`: that variant's actor count (`auto` too), instead of
--actors. Each round runs every variant once, in order (A B C D, A B C D, ...), so a slow spell of this
shared machine falls on all of them alike; each run is `./launch.sh N` on the default game
(Airstriker) for --warmup + --seconds, its frames/s read from metrics.jsonl over the last
--seconds. Prints and writes (cost.json, cost.md in --out) each variant's mean frames/s and its
ratio to the first variant (issue 18: the LSTM within 15 % of the feed-forward model; issue 22:
adaptive within 3 % of none).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.bench_learning import window_fps
from testkit.processes import free_base_port

ROOT = Path(__file__).resolve().parents[1]


def one_run(n: int | str, flags: list[str], run_dir: Path, warmup: float, seconds: float) -> dict:
    p = subprocess.Popen([str(ROOT / "launch.sh"), str(n), "--run-dir", str(run_dir), "--port", str(free_base_port()),
                          "--report-interval", "5", "--overwrite", *flags],
                         stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        time.sleep(warmup + seconds + 10)
    finally:
        os.killpg(p.pid, signal.SIGINT)
        p.wait(60)
    fps, first, last = window_fps(run_dir, seconds)
    return {"fps": round(fps, 1), "window_s": round(last["wall_s"] - first["wall_s"], 1),
            "policy_lag_mean": last.get("policy_lag_mean"), "updates": last["updates"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_cost", description=__doc__.split("\n")[0])
    ap.add_argument("--variant", action="append", required=True, metavar="NAME=FLAGS",
                    help="a name and the learner flags of one variant (the first is the reference)")
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--warmup", type=float, default=30)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default="bench_out/cost")
    args = ap.parse_args(argv)
    variants = []
    for v in args.variant:
        name, sep, flags = v.partition("=")
        if not sep or not name:
            ap.error(f"--variant {v!r}: expected NAME=FLAGS")
        flags = shlex.split(flags)
        n = flags.pop(0)[1:] if flags and flags[0].startswith("@") else str(args.actors)
        if not (n == "auto" or n.isdigit()):
            ap.error(f"--variant {v!r}: @N takes a number or auto")
        variants.append((name, n, flags))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs: list[dict] = []
    for rnd in range(args.rounds):
        for name, n, flags in variants:
            r = one_run(n, flags, out / f"{name}_{rnd}", args.warmup, args.seconds)
            r.update(variant=name, round=rnd, actors=n)
            runs.append(r)
            print(json.dumps(r), flush=True)
    ref = None
    lines = [f"| variant | `./launch.sh` | frames/s per round | mean | ratio to {variants[0][0]} |",
             "| --- | --- | --- | --- | --- |"]
    summary = {}
    for name, n, flags in variants:
        fps = [r["fps"] for r in runs if r["variant"] == name]
        mean = sum(fps) / len(fps)
        ref = mean if ref is None else ref
        summary[name] = {"fps": fps, "mean": round(mean, 1), "ratio": round(mean / ref, 3)}
        lines.append(f"| {name} | `{' '.join([n, *flags])}` | {', '.join(f'{x:,.0f}' for x in fps)} | {mean:,.0f} "
                     f"| {mean / ref:.3f} |")
    (out / "cost.json").write_text(json.dumps({"runs": runs, "summary": summary}, indent=1))
    (out / "cost.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
