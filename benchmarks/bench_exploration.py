"""Exploration variants side by side through the real pipeline (issue 22): `none`, the fixed
epsilon ladder and `adaptive` (a bandit per actor), the same frames and seeds for each.

    python -m benchmarks.bench_exploration --env Airstriker-Genesis-v0 --frames 2000000 --seeds 1 2 3 --out DIR
    python -m benchmarks.bench_exploration --env CartPole-v1 --frames 20000 --seeds 1 --out /tmp/x  # smoke

Runs go seed by seed (none, epsilon, adaptive for seed 1, then seed 2, ...). A run that reached its
frames leaves DIR/VARIANT_SEED/done.json and is kept when the command runs again with the same
--frames: a benchmark of many hours can be stopped and taken up again later. A run stopped
part-way continues from its newest checkpoint (`--resume`; its actors, and with them the adaptive
bandits, start afresh, and the frames since that checkpoint are played again). `--launch` runs each variant as
`./launch.sh ACTORS` (what users run: an actor host of emulators) instead of a learner and ACTORS
actor processes.

Writes DIR/exploration.csv (frames, mean return per variant, mean over seeds), exploration.png (the
three curves on one plot), arm_shares.png (the adaptive runs' share of episodes per arm over
frames) and exploration.json / .md (the mean return per variant and seed over the learner's
--return-window, 100 episodes unless the flags after -- say otherwise; games, with lives).
"""

from __future__ import annotations

import argparse
import json
import tomllib
from pathlib import Path

import numpy as np

from benchmarks.bench_atari import launch
from testkit.processes import run_pipeline

VARIANTS = ("none", "epsilon", "adaptive")


def window_of(run_dir: Path) -> int:
    """The run's --return-window (the episodes its mean return is over), from its config.toml."""
    try:
        return int(tomllib.loads((run_dir / "config.toml").read_text()).get("return_window", 100))
    except (OSError, ValueError):
        return 100


def rows_of(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]


def mean_curve(runs: list[list[dict]], grid: np.ndarray) -> np.ndarray:
    """The mean return over seeds at each frame count of `grid` (each run's curve interpolated)."""
    curves = []
    for rows in runs:
        pts = [(r["frames"], r["mean_return"]) for r in rows if r["mean_return"] is not None]
        if pts:
            f, ret = np.array(pts, dtype=float).T
            curves.append(np.interp(grid, f, ret, left=np.nan, right=ret[-1]))
    if not curves:
        return np.full(len(grid), np.nan)
    stacked = np.array(curves)
    seen = ~np.isnan(stacked).all(axis=0)  # frames before any run's first return stay NaN, silently
    out = np.full(len(grid), np.nan)
    out[seen] = np.nanmean(stacked[:, seen], axis=0)
    return out


def plot(out: Path, grid: np.ndarray, curves: dict[str, np.ndarray], arm_rows: list[dict], env: str,
         window: int = 100) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, ys in curves.items():
        ax.plot(grid, ys, label=f"--exploration {name}")
    ax.set_xlabel("emulator frames")
    ax.set_ylabel(f"mean return (last {window} episodes), mean over seeds")
    ax.set_title(env)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "exploration.png", dpi=100)
    if arm_rows:
        names = list(arm_rows[0]["arms"])
        frames = [r["frames"] for r in arm_rows]
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.stackplot(frames, *[[r["arms"][n]["share"] for r in arm_rows] for n in names], labels=names)
        ax.set_xlabel("emulator frames")
        ax.set_ylabel("share of recent episodes")
        ax.set_title(f"{env}: arms chosen by --exploration adaptive (seed {arm_rows[0].get('seed', '?')})")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.tight_layout()
        fig.savefig(out / "arm_shares.png", dpi=100)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_exploration")
    p.add_argument("--env", default="Airstriker-Genesis-v0")
    p.add_argument("--frames", type=int, default=2_000_000)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--actors", type=int, default=2)
    p.add_argument("--launch", action="store_true",
                   help="run each variant as ./launch.sh ACTORS (one actor host of emulators) instead of "
                        "a learner and ACTORS actor processes")
    p.add_argument("--timeout", type=float, default=6 * 3600)
    p.add_argument("--out", default="bench_out/exploration")
    p.add_argument("extra", nargs="*", help="more learner flags (after --)")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[list[dict]]] = {v: [] for v in args.variants}
    finals: dict[str, dict[int, float | None]] = {v: {} for v in args.variants}
    # Seeds outer, variants inner: a benchmark stopped part-way has every variant at the same seeds.
    # A run that finished (its done.json) is kept, not run again: the 9 runs may span sessions.
    for seed in args.seeds:
        for variant in args.variants:
            run_dir = out / f"{variant}_{seed}"
            done = run_dir / "done.json"
            if done.exists() and json.loads(done.read_text()).get("frames_target") == args.frames:
                print(f"{variant} seed {seed}: finished before, kept ({run_dir})", flush=True)
            else:
                flags = ["--env", args.env, "--exploration", variant, "--seed", str(seed),
                         "--total-frames", str(args.frames), "--eval-interval", "0", *args.extra]
                if any((run_dir / "checkpoints").glob("*.pt")):  # stopped part-way: continue it
                    print(f"{variant} seed {seed}: resuming its newest checkpoint ({run_dir})", flush=True)
                    flags.append("--resume")
                if args.launch:  # ./launch.sh N, as users run it (a host of emulators); its files in run_dir
                    run_dir.mkdir(parents=True, exist_ok=True)
                    launch(args.actors, flags, run_dir, run_dir, args.timeout)
                else:
                    run_pipeline(flags, args.actors, run_dir, timeout=args.timeout)
            rows = rows_of(run_dir)
            runs[variant].append(rows)
            finals[variant][seed] = next((r["mean_return"] for r in reversed(rows) if r["mean_return"] is not None), None)
            if rows and rows[-1]["frames"] >= args.frames:
                done.write_text(json.dumps({"frames_target": args.frames, "frames": rows[-1]["frames"],
                                            "mean_return": finals[variant][seed], "flags": args.extra}))
            print(f"{variant} seed {seed}: {rows[-1]['frames'] if rows else 0:,} frames, mean return (last "
                  f"{window_of(run_dir)}) {finals[variant][seed]}", flush=True)
    grid = np.linspace(0, args.frames, 101)
    curves = {v: mean_curve(runs[v], grid) for v in args.variants}
    with open(out / "exploration.csv", "w") as fh:
        fh.write("frames," + ",".join(args.variants) + "\n")
        for i, f in enumerate(grid):
            fh.write(f"{int(f)}," + ",".join(f"{curves[v][i]:.3f}" for v in args.variants) + "\n")
    arm_rows = [{**r, "seed": args.seeds[0]} for r in runs.get("adaptive", [[]])[0] if "arms" in r] \
        if "adaptive" in runs else []
    plot(out, grid, curves, arm_rows, args.env, window_of(out / f"{args.variants[0]}_{args.seeds[0]}"))
    summary = {v: {"per_seed": finals[v], "mean_over_seeds": _mean(list(finals[v].values()))} for v in args.variants}
    (out / "exploration.json").write_text(json.dumps({"env": args.env, "frames": args.frames, **summary}, indent=1))
    lines = ["| variant | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean |", "|---" * (len(args.seeds) + 2) + "|"]
    for v in args.variants:
        lines.append(f"| {v} | " + " | ".join(str(finals[v][s]) for s in args.seeds)
                     + f" | {summary[v]['mean_over_seeds']} |")
    (out / "exploration.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _mean(xs: list[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return round(sum(vals) / len(vals), 3) if vals else None


if __name__ == "__main__":
    main()
