"""Learning benchmarks through the real pipeline (learner + actor processes over ZeroMQ).

    python -m benchmarks.bench_learning cartpole [--seeds 1 2 3] [--modes async sync]
    python -m benchmarks.bench_learning readme-cartpole [--seeds 1 2 3 4 5]  # ./launch.sh 2 --env CartPole-v1
    python -m benchmarks.bench_learning airstriker --frames 2000000 --actors 2 --run-dir runs/air-curve
    python -m benchmarks.bench_learning pomdp --seeds 1 2 3 --steps 500000 --out DIR  # lstm vs mlp, velocities hidden
    python -m benchmarks.bench_learning curve RUN_DIR      # learning_curve.csv/.png of a finished run
    python -m benchmarks.bench_learning launch-fps --actors 1 2 --seconds 60   # ./launch.sh N frames/s
    python -m benchmarks.bench_learning atari --env ALE/Pong-v5 --frames 10000000 --actors 8 --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from benchmarks import bench_atari
from testkit.processes import free_base_port, run_pipeline
from testkit.run_files import pipeline_result, read_metrics


def cartpole(args: argparse.Namespace) -> None:
    out = Path(args.out)
    results = []
    for mode in args.modes:
        for seed in args.seeds:
            flags = ["--env", "CartPole-v1", "--mode", mode, "--seed", str(seed), "--stop-at-return", "475",
                     "--return-window", "20", "--total-frames", str(args.max_steps), *args.extra]
            r = run_pipeline(flags, args.actors, out / f"cartpole_{mode}_{seed}", timeout=args.timeout)
            r.update(mode=mode, seed=seed)
            results.append(r)
            print(json.dumps(r), flush=True)
    _report(out / "cartpole", results, ["mode", "seed", "solved", "steps to 475", "seconds", "updates",
                                         "lag mean / max"],
            lambda r: [r["mode"], r["seed"], "yes" if r["solved"] else "NO", f"{r['steps']:,}",
                       f"{r['seconds']:.1f}", r["updates"], f"{r['policy_lag_mean']} / {r['policy_lag_max']}"])


def pomdp(args: argparse.Namespace) -> None:
    """retrofleet/CartPoleNoVel-v1 (CartPole without its velocities): each model per seed until a
    mean return of 400 (last 100 episodes) or `--steps`; pomdp.csv, pomdp.png and a table."""
    from common.pomdp import CARTPOLE_NOVEL

    out = Path(args.out)
    results, curves = [], []
    for model in args.models:
        for seed in args.seeds:
            run_dir = out / f"pomdp_{model}_{seed}"
            flags = ["--env", CARTPOLE_NOVEL, "--model", model, "--seed", str(seed), "--stop-at-return", "400",
                     "--return-window", "100", "--total-frames", str(args.steps), "--eval-interval", "0", *args.extra]
            r = run_pipeline(flags, args.actors, run_dir, timeout=args.timeout)
            r.update(model=model, seed=seed)
            results.append(r)
            print(json.dumps(r), flush=True)
            rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
            curves += [(model, seed, x["steps"], x["mean_return"]) for x in rows if x["mean_return"] is not None]
    with open(out / "pomdp.csv", "w") as fh:
        fh.write("model,seed,steps,mean_return\n")
        fh.writelines(f"{m},{s},{n},{ret}\n" for m, s, n, ret in curves)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, model in enumerate(args.models):
        for seed in args.seeds:
            pts = [(n, ret) for m, s, n, ret in curves if m == model and s == seed]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=f"C{i}", alpha=0.8,
                    label=f"--model {model}" if seed == args.seeds[0] else None)
    ax.axhline(400, color="gray", linestyle="--", label="target 400")
    ax.set_xlabel("agent steps")
    ax.set_ylabel("mean return (last 100 episodes)")
    ax.set_title(f"{CARTPOLE_NOVEL}: velocities hidden")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "pomdp.png", dpi=100)
    _report(out / "pomdp", results, ["model", "seed", "reached 400", "steps", "seconds", "best mean return (100)"],
            lambda r: [r["model"], r["seed"], "yes" if r["solved"] else "NO", f"{r['steps']:,}",
                       f"{r['seconds']:.1f}", r["best_mean_return"]])


def _report(stem: Path, results: list[dict], header: list[str], cells) -> None:
    """STEM.json with the results, STEM.md with a table of `cells(result)` rows; the table printed."""
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1))
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in cells(r)) + " |" for r in results]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def readme_cartpole(args: argparse.Namespace) -> None:
    """The README's `./launch.sh 2 --env CartPole-v1` (its preset, no other setting) per seed,
    stopped once the console's mean return (last 100 episodes) reaches 475 or at 300k steps."""
    root = Path(__file__).resolve().parents[1]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for seed in args.seeds:
        run_dir = out / f"readme_cartpole_{seed}"
        cmd = [str(root / "launch.sh"), "2", "--env", "CartPole-v1", "--seed", str(seed),
               "--stop-at-return", "475", "--total-frames", str(args.max_steps), "--run-dir", str(run_dir),
               "--port", str(free_base_port()), *args.extra]
        with open(out / f"readme_cartpole_{seed}.out", "wb") as log:
            subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=args.timeout, check=True)
        r = {"seed": seed, **pipeline_result(run_dir)}
        results.append(r)
        print(json.dumps(r), flush=True)
    _report(out / "readme_cartpole", results, ["seed", "reached 475", "steps to 475", "seconds", "updates",
                                                "best mean return (100)"],
            lambda r: [r["seed"], "yes" if r["solved"] else "NO", f"{r['steps']:,}", f"{r['seconds']:.1f}",
                       r["updates"], r["best_mean_return"]])


def random_baseline(env_id: str, episodes: int, seed: int = 0) -> float:
    """Mean return of uniformly random actions under the training preprocessing."""
    import numpy as np

    from common.config import Config
    from common.envs import make_env
    from common.families import env_settings

    env = make_env(env_id, seed=seed, **env_settings(Config(env=env_id)))
    rng = np.random.default_rng(seed)
    returns = []
    try:
        for _ in range(episodes):
            env.reset()
            done, total = False, 0.0
            while not done:
                _, r, term, trunc, _ = env.step(int(rng.integers(env.action_space.n)))
                total += r
                done = term or trunc
            returns.append(total)
    finally:
        env.close()
    return float(np.mean(returns))


def curve(run_dir: Path, baseline: float | None) -> None:
    """learning_curve.csv and .png from a run's metrics.jsonl."""
    rows = [r for r in read_metrics(run_dir) if r["mean_return"] is not None]
    with open(run_dir / "learning_curve.csv", "w") as fh:
        fh.write("frames,wall_s,mean_return,episodes,updates\n")
        for r in rows:
            fh.write(f"{r['frames']},{r['wall_s']},{r['mean_return']},{r['episodes']},{r['updates']}\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["frames"] for r in rows], [r["mean_return"] for r in rows], label="mean return (last 100 episodes)")
    if baseline is not None:
        ax.axhline(baseline, color="gray", linestyle="--", label=f"random policy ({baseline:.0f})")
    ax.set_xlabel("emulator frames")
    ax.set_ylabel("return")
    ax.set_title(run_dir.name)
    ax.legend()
    fig.tight_layout()
    fig.savefig(run_dir / "learning_curve.png", dpi=100)
    if rows:
        print(f"{run_dir}: {rows[-1]['frames']:,} frames, final mean return {rows[-1]['mean_return']}")


def airstriker(args: argparse.Namespace) -> None:
    run_dir = Path(args.run_dir)
    baseline = random_baseline("Airstriker-Genesis-v0", args.baseline_episodes)
    print(f"random policy: mean return {baseline:.1f} over {args.baseline_episodes} episodes", flush=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "random_baseline.json").write_text(json.dumps({"mean_return": baseline,
                                                              "episodes": args.baseline_episodes}))
    flags = ["--total-frames", str(args.frames), *args.extra]
    r = run_pipeline(flags, args.actors, run_dir, timeout=args.timeout)
    print(json.dumps(r))
    curve(run_dir, baseline)


def raw_emulator_fps(seconds: float = 10.0) -> float:
    """Frames/s of the bare emulator on one core, in a process of its own: the reference
    `benchmarks.bench` uses too (bench_parts.raw_emulator)."""
    from benchmarks.bench_parts import run_part

    return run_part("raw", "--seconds", str(seconds))["frames_per_s"]


def window_fps(run_dir: Path, seconds: float) -> tuple[float, dict, dict]:
    """Frames/s between the metrics rows `seconds` apart that end 10 s before the run's last row
    (the run was stopped 10 s after its window); (fps, first row, last row)."""
    rows = read_metrics(run_dir)
    t_end = rows[-1]["wall_s"]
    first = next(r for r in rows if r["wall_s"] >= t_end - seconds - 10)
    last = [r for r in rows if r["wall_s"] <= first["wall_s"] + seconds][-1]
    return (last["frames"] - first["frames"]) / (last["wall_s"] - first["wall_s"]), first, last


def launch_fps(args: argparse.Namespace) -> None:
    """./launch.sh N on Airstriker for warm-up + S seconds; frames/s over the measured window."""
    root = Path(__file__).resolve().parents[1]
    results: dict = {"runs": []}
    for n in args.actors:
        raw_before = raw_emulator_fps()
        run_dir = Path(args.out) / f"launch_{n}"
        p = subprocess.Popen([str(root / "launch.sh"), str(n), "--run-dir", str(run_dir), "--port",
                              str(free_base_port()), "--report-interval", "5", *args.extra],
                             stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        time.sleep(args.warmup + args.seconds + 10)
        os.killpg(p.pid, signal.SIGINT)
        p.wait(30)
        raw = (raw_before + raw_emulator_fps()) / 2  # the machine is noisy: bracket the run
        fps, first, last = window_fps(run_dir, args.seconds)
        split = re.findall(r"per step: (.*)", (run_dir / "actor_0.log").read_text())
        r = {"actors": n, "raw_emulator_fps": round(raw, 1), "fps": round(fps, 1),
             "fps_per_actor": round(fps / n, 1),
             "ratio_to_raw": round(fps / raw, 3), "window_s": round(last["wall_s"] - first["wall_s"], 1),
             "updates": last["updates"], "actor_0_step_split": split[-1] if split else None}
        results["runs"].append(r)
        print(json.dumps(r), flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "launch_fps.json").write_text(json.dumps(results, indent=1))


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_learning")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cartpole", help="steps and seconds to a mean return of 475 (last 20 episodes)")
    c.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    c.add_argument("--modes", nargs="+", default=["async", "sync"], choices=("async", "sync"))
    c.add_argument("--actors", type=int, default=2)
    c.add_argument("--max-steps", type=int, default=300_000)
    c.add_argument("--timeout", type=float, default=600)
    c.add_argument("--out", default="bench_out")
    c.add_argument("extra", nargs="*", help="more learner flags (after --)")
    r = sub.add_parser("readme-cartpole", help="./launch.sh 2 --env CartPole-v1 per seed: steps to a "
                       "mean return of 475 over the last 100 episodes")
    r.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    r.add_argument("--max-steps", type=int, default=300_000)
    r.add_argument("--timeout", type=float, default=900)
    r.add_argument("--out", default="bench_out")
    r.add_argument("extra", nargs="*", help="more learner flags (after --), e.g. --preset none")
    a = sub.add_parser("airstriker", help="a learning curve on Airstriker-Genesis-v0")
    a.add_argument("--frames", type=int, default=2_000_000)
    a.add_argument("--actors", type=int, default=2)
    a.add_argument("--run-dir", default="runs/airstriker-curve")
    a.add_argument("--baseline-episodes", type=int, default=10)
    a.add_argument("--timeout", type=float, default=6 * 3600)
    a.add_argument("extra", nargs="*", help="more learner flags (after --)")
    f = sub.add_parser("launch-fps", help="frames/s of ./launch.sh N on Airstriker beside the raw emulator")
    f.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    f.add_argument("--seconds", type=float, default=60)
    f.add_argument("--warmup", type=float, default=15)
    f.add_argument("--out", default="bench_out")
    f.add_argument("extra", nargs="*", help="more learner flags (after --)")
    bench_atari.add_parser(sub)
    m = sub.add_parser("pomdp", help="--model lstm vs mlp on CartPole with the velocities hidden")
    m.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    m.add_argument("--models", nargs="+", default=["lstm", "mlp"], choices=("lstm", "mlp"))
    m.add_argument("--steps", type=int, default=500_000)
    m.add_argument("--actors", type=int, default=2)
    m.add_argument("--timeout", type=float, default=1800)
    m.add_argument("--out", default="bench_out")
    m.add_argument("extra", nargs="*", help="more learner flags (after --)")
    k = sub.add_parser("curve", help="learning_curve.csv/.png of a run directory")
    k.add_argument("run_dir")
    k.add_argument("--baseline", type=float)
    args = p.parse_args()
    if args.cmd == "cartpole":
        cartpole(args)
    elif args.cmd == "readme-cartpole":
        readme_cartpole(args)
    elif args.cmd == "airstriker":
        airstriker(args)
    elif args.cmd == "pomdp":
        pomdp(args)
    elif args.cmd == "launch-fps":
        launch_fps(args)
    elif args.cmd == "atari":
        bench_atari.atari(args)
    else:
        curve(Path(args.run_dir), args.baseline)


if __name__ == "__main__":
    main()
