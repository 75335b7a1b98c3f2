"""An Atari learning curve through ./launch.sh, drawn beside CleanRL's published PPO result.

    python -m benchmarks.bench_learning atari --env ALE/Pong-v5 --frames 10000000 --actors 8 --out bench_out/pong

writes OUT/run/ (the run directory), OUT/atari_curve.csv (emulator frames, wall clock, mean
return of the last 20 games) and OUT/atari_curve.png (return against emulator frames and against
wall clock, CleanRL's final return drawn at the frames it took).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from testkit.processes import free_base_port
from testkit.run_files import read_metrics

# CleanRL ppo_atari.py benchmark, docs.cleanrl.dev/rl-algorithms/ppo/#ppo_ataripy ("Experiment
# results", mean +- std over 3 seeds of the average episodic return at the end of training).
# Its runs are the v4 NoFrameskip ids (no sticky actions: repeat_action_probability 0), 10M
# agent steps (global_step = env steps over its 8 envs) at frame skip 4: 40M emulator frames.
# Its docs give the learning curves as images only: no published figure at 2, 5 or 10M frames.
CLEANRL_PPO_ATARI = {
    "Pong": {"return": 20.36, "std": 0.20, "agent_steps": 10_000_000, "frames": 40_000_000},
    "Breakout": {"return": 414.66, "std": 28.09, "agent_steps": 10_000_000, "frames": 40_000_000},
    "BeamRider": {"return": 1915.93, "std": 484.58, "agent_steps": 10_000_000, "frames": 40_000_000},
}
SOURCE = "CleanRL ppo_atari.py benchmark, docs.cleanrl.dev/rl-algorithms/ppo/#ppo_ataripy"
ROOT = Path(__file__).resolve().parents[1]


def game_of(env_id: str) -> str:
    """'ALE/Pong-v5' and 'PongNoFrameskip-v4' -> 'Pong'."""
    name = env_id.split("/")[-1].split("-")[0]
    for suffix in ("NoFrameskip", "Deterministic"):
        name = name.removesuffix(suffix)
    return name


def run(args: argparse.Namespace) -> Path:
    """./launch.sh ACTORS --env ENV --total-frames FRAMES; the run directory when it stops."""
    out = Path(args.out)
    run_dir = out / "run"
    out.mkdir(parents=True, exist_ok=True)
    launch(args.actors, ["--env", args.env, "--total-frames", str(args.frames), "--report-interval", "10",
                         "--return-window", "20", "--eval-interval", "0", *args.extra], run_dir, out, args.timeout)
    return run_dir


def launch(actors: int, flags: list[str], run_dir: Path, out: Path, timeout: float) -> None:
    """./launch.sh ACTORS FLAGS --run-dir RUN_DIR; OUT/command.txt and OUT/launch.out; SIGINT at the timeout."""
    cmd = [str(ROOT / "launch.sh"), str(actors), *flags, "--run-dir", str(run_dir), "--port", str(free_base_port())]
    (out / "command.txt").write_text(" ".join(cmd[1:]) + "\n")
    with open(out / "launch.out", "wb") as log:
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGINT)  # the run stops cleanly and keeps what it has
            p.wait(60)


def curve(run_dir: Path, out: Path, env_id: str) -> dict:
    """atari_curve.csv and .png from a run's metrics.jsonl; the figures at 2, 5 and 10M frames."""
    rows = [r for r in read_metrics(run_dir) if r["mean_return"] is not None]
    with open(out / "atari_curve.csv", "w") as fh:
        fh.write("frames,wall_s,mean_return_last_20_games,episodes,updates\n")
        for r in rows:
            fh.write(f"{r['frames']},{r['wall_s']},{r['mean_return']},{r['episodes']},{r['updates']}\n")
    at = {}
    for mark in (2_000_000, 5_000_000, 10_000_000):
        seen = [r for r in rows if r["frames"] <= mark]
        if seen and rows[-1]["frames"] >= mark:
            at[f"{mark // 1_000_000}M"] = {"mean_return": seen[-1]["mean_return"], "wall_s": seen[-1]["wall_s"]}
    ref = CLEANRL_PPO_ATARI.get(game_of(env_id))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_frames, by_time) = plt.subplots(1, 2, figsize=(12, 4))
    by_frames.plot([r["frames"] for r in rows], [r["mean_return"] for r in rows], label="retrofleet (last 20 games)")
    if ref:
        by_frames.errorbar([ref["frames"]], [ref["return"]], yerr=[ref["std"]], fmt="o", color="C3",
                           label=f"CleanRL PPO at {ref['frames'] / 1e6:.0f}M frames: {ref['return']}")
        by_frames.axhline(ref["return"], color="C3", linestyle=":", linewidth=1)
    by_frames.set_xlabel("emulator frames (agent steps x 4)")
    by_frames.set_ylabel("return of a whole game")
    by_frames.legend(fontsize=8)
    by_time.plot([r["wall_s"] / 60 for r in rows], [r["mean_return"] for r in rows])
    by_time.set_xlabel("wall clock (minutes)")
    fig.suptitle(f"{env_id}; reference: {SOURCE}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "atari_curve.png", dpi=100)
    plt.close(fig)
    summary = {"env": env_id, "frames": rows[-1]["frames"] if rows else 0,
               "wall_s": rows[-1]["wall_s"] if rows else 0,
               "final_mean_return": rows[-1]["mean_return"] if rows else None, "at": at,
               "cleanrl": ref, "source": SOURCE}
    (out / "atari_summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def atari(args: argparse.Namespace) -> None:
    start = time.monotonic()
    run_dir = run(args)
    summary = curve(run_dir, Path(args.out), args.env)
    summary["bench_wall_s"] = round(time.monotonic() - start, 1)
    print(json.dumps(summary), flush=True)


def add_parser(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("atari", help="an Atari learning curve beside CleanRL's published PPO return")
    a.add_argument("--env", default="ALE/Pong-v5")
    a.add_argument("--frames", type=int, default=10_000_000, help="emulator frames (agent steps x 4)")
    a.add_argument("--actors", type=int, default=8, help="./launch.sh N")
    a.add_argument("--out", default="bench_out/atari")
    a.add_argument("--timeout", type=float, default=6 * 3600)
    a.add_argument("extra", nargs="*", help="more learner flags (after --)")
