"""Actor host benchmarks: every ratio divides two figures of the same run.

    python -m benchmarks.host pipeline --emulators 1 2 4 8 [--window 20] [--train]
        end to end on Airstriker: N emulators as one actor host (`actor --emulators N`), then as
        N one-process actors, each into the no-gradient learner (benchmarks.bench_parts
        consumer: receive, validate, batch, publish; no update), bracketed by raw emulator runs;
        frames/s against raw x min(N, cores) and CPU per frame of learner and actors. --train adds
        runs of the real learner (training on CPU) with 2 emulators each way: the learner's share.
    python -m benchmarks.host core --emulators 1 2 4 8 --seconds 20 [--env ENV]
        the host's core alone (emulator processes, shared slots, batched inference, rollouts cut
        and encoded; no learner) beside N one-process actors doing the same without sockets,
        bracketed by raw emulator runs.
    python -m benchmarks.host infer
        the host's policy alone: microseconds per sample by batch size and precision.

Each measurement runs in fresh processes, one after another; `_core` and `_actor` are the
workers it starts (one JSON line each on stdout).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.bench_parts import _timed, run_part

if TYPE_CHECKING:
    from common.runspec import RunSpec

AIRSTRIKER = "Airstriker-Genesis-v0"


def _settings(env: str) -> RunSpec:
    """What a learner with default flags would put in its welcome, for `env`."""
    from common.config import Config
    from common.runspec import RunSpec

    return RunSpec.from_config(Config(env=env))


def _cpu_seconds(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


# ---------------------------------------------------------------------------- workers


def core_worker(env: str, n: int, seconds: float, warmup: float, device: str,
                pool_options: dict[str, Any] | None = None, dtype: str = "float32") -> dict[str, Any]:
    """The host's core for `warmup` + `seconds`; figures over the last `seconds`."""
    import torch

    from actor.inference import pick_device
    from actor.sampler import Member, Sampler
    from common import protocol
    from common.config import actor_seed

    torch.set_num_threads(1)
    s = _settings(env)
    sampler = Sampler.from_spec(s, n, pick_device(device), dtype=dtype, **(pool_options or {}))
    try:
        for k in range(n):
            sampler.assign(k, Member(k, actor_seed(1, k), 0.0))
        encode_s = 0.0
        rollouts = 0
        t_end = time.perf_counter() + warmup
        window: dict[str, Any] = {}
        clock = time.perf_counter
        while True:
            now = clock()
            if not window and now >= t_end:
                sampler.stats.reset()
                encode_s, rollouts = 0.0, 0
                pids = [p for p in sampler.pool.pids() if p is not None]
                window = {"t0": now, "busy0": sampler.pool.slots.busy.copy(), "cpu_emu0": _cpu_seconds(pids),
                          "cpu_self0": time.process_time(), "pids": pids}
                t_end = now + seconds
            elif window and now >= t_end:
                break
            for _, r in sampler.step(0, 0.5):
                t0 = clock()
                protocol.encode_rollout(r)
                encode_s += clock() - t0
                rollouts += 1
        wall = clock() - window["t0"]
        st = sampler.stats
        frames = st.samples * s.env.frame_skip
        busy = (sampler.pool.slots.busy - window["busy0"]) / wall
        cpu_emu = _cpu_seconds(window["pids"]) - window["cpu_emu0"]
        cpu_self = time.process_time() - window["cpu_self0"]
    finally:
        sampler.close()
    return {"mode": "host", "env": env, "emulators": n, "seconds": wall, "frames_per_s": frames / wall,
            "mean_batch": st.samples / max(st.batches, 1), "rollouts": rollouts,
            "host_share": {k: v / wall for k, v in st.seconds.items()} | {"encode": encode_s / wall},
            "emulator_busy_share": [round(float(b), 3) for b in busy],
            "cpu_us_per_frame": {"emulators": 1e6 * cpu_emu / frames, "inference_process": 1e6 * cpu_self / frames}}


def actor_worker(env: str, seconds: float, warmup: float, seed: int) -> dict[str, Any]:
    """One-process actor loop (env + policy in this process, collect + encode), no sockets."""
    import torch

    from actor.rollout import RolloutCollector
    from common import protocol
    from common.model import build_model

    torch.set_num_threads(1)
    s = _settings(env)
    collector = RolloutCollector(s.make_env(seed), actor_id=0, seed=seed, unroll_length=s.unroll_length,
                                 frame_stack=s.model.frame_stack, frame_skip=s.env.frame_skip)
    model = build_model(s.model.as_dict()).eval()
    t_end = time.perf_counter() + warmup
    while time.perf_counter() < t_end:
        protocol.encode_rollout(collector.collect(model, 0))
    steps, cpu0, t0 = 0, time.process_time(), time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        protocol.encode_rollout(collector.collect(model, 0))
        steps += s.unroll_length
    wall = time.perf_counter() - t0
    frames = steps * s.env.frame_skip
    return {"frames_per_s": frames / wall, "cpu_us_per_frame": 1e6 * (time.process_time() - cpu0) / frames}


def inference_worker(batches: list[int], seconds: float, rounds: int = 3, env: str = AIRSTRIKER) -> dict[str, Any]:
    """Microseconds per sample of the host's policy (Nature CNN, one thread) at each batch size
    and precision; interleaved rounds, median of each."""
    import numpy as np
    import torch

    from actor.inference import BatchedPolicy

    torch.set_num_threads(1)
    spec = _settings(env).model.as_dict()
    policies = {dtype: BatchedPolicy(spec, torch.device("cpu"), max(batches), dtype=dtype)
                for dtype in ("float32", "bfloat16")}
    rng = np.random.default_rng(0)
    samples: dict[str, list[float]] = {}
    for _ in range(rounds):
        for b in batches:
            obs = rng.integers(0, 256, (b, 4, 84, 84), dtype=np.uint8)
            for dtype, policy in policies.items():
                per = _timed(lambda p=policy, o=obs: p.logits(o), seconds / rounds)
                samples.setdefault(f"{dtype} {b}", []).append(1e6 * per / b)
    return {k: statistics.median(v) for k, v in samples.items()}


# ---------------------------------------------------------------------------- driver


def _run(args: list[str], timeout: float) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.host", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} exited with {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def processes(env: str, n: int, seconds: float, warmup: float) -> dict[str, Any]:
    """N one-process actor loops at once, each in its own process."""
    procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.host", "_actor", "--env", env, "--seconds",
                               str(seconds), "--warmup", str(warmup), "--seed", str(100 + i)],
                              stdout=subprocess.PIPE, text=True) for i in range(n)]
    out = [json.loads(p.communicate(timeout=seconds + warmup + 120)[0].strip().splitlines()[-1]) for p in procs]
    return {"mode": "process", "env": env, "emulators": n, "frames_per_s": sum(r["frames_per_s"] for r in out),
            "cpu_us_per_frame": statistics.mean(r["cpu_us_per_frame"] for r in out)}


def _pipeline_run(out: Path, name: str, learner_cmd: list[str], actors: list[list[str]], warm: float,
                  window: float) -> dict[str, Any]:
    from benchmarks.bench import Session

    s = Session(out, name, learner_cmd)
    try:
        for flags in actors:
            s.add_actor(*flags)
        time.sleep(warm)
        w = s.window(window)
    finally:
        s.close()
    return w


def pipeline(args: argparse.Namespace) -> None:
    cores = os.cpu_count() or 1
    out = Path(args.out)
    consumer = [sys.executable, "-m", "benchmarks.bench_parts", "consumer"]
    results: dict[str, Any] = {"cores": cores, "runs": []}
    for n in args.emulators:
        raw_before = run_part("raw", "--seconds", str(args.raw_seconds))["frames_per_s"]
        runs = []
        for mode in args.modes:
            actors = [["--emulators", str(n)]] if mode == "host" else [[] for _ in range(n)]
            w = _pipeline_run(out, f"{mode}{n}", consumer, actors, args.warm, args.window)
            runs.append({"mode": mode, "emulators": n, **w})
        raw = (raw_before + run_part("raw", "--seconds", str(args.raw_seconds))["frames_per_s"]) / 2
        for r in runs:
            r["raw_frames_per_s"] = raw
            r["ratio_to_raw_x_cores"] = r["frames_per_s"] / (raw * min(n, cores))
            r["cpu_us_per_frame"] = {"learner": 1e6 * r["learner_cpu_cores"] / r["frames_per_s"],
                                     "actors": 1e6 * r["actors_cpu_cores"] / r["frames_per_s"]}
            results["runs"].append(r)
            print(json.dumps(r), flush=True)
    if args.train:  # the real learner, training on CPU: its share of the cores
        learner = [str(Path(sys.executable).parent / "learner"), "--quiet", "--report-interval", "1"]
        raw = run_part("raw", "--seconds", str(args.raw_seconds))["frames_per_s"]
        for mode in args.modes:
            actors = [["--emulators", "2"]] if mode == "host" else [[], []]
            w = _pipeline_run(out, f"train_{mode}2", learner, actors, args.warm, args.window)
            r = {"mode": f"{mode}, real learner training on CPU", "emulators": 2, **w, "raw_frames_per_s": raw,
                 "ratio_to_raw_x_cores": w["frames_per_s"] / (raw * min(2, cores)),
                 "cpu_us_per_frame": {"learner": 1e6 * w["learner_cpu_cores"] / w["frames_per_s"],
                                      "actors": 1e6 * w["actors_cpu_cores"] / w["frames_per_s"]}}
            results["runs"].append(r)
            print(json.dumps(r), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "host_pipeline.json").write_text(json.dumps(results, indent=1))
    lines = ["| emulators | actors | frames/s | raw x min(N, cores) | ratio | CPU us/frame: actors + learner | rejected |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results["runs"]:
        c = r["cpu_us_per_frame"]
        lines.append(f"| {r['emulators']} | {r['mode']} | {r['frames_per_s']:,.0f} | "
                     f"{r['raw_frames_per_s'] * min(r['emulators'], cores):,.0f} | {r['ratio_to_raw_x_cores']:.2f} | "
                     f"{c['actors']:.0f} + {c['learner']:.0f} | {r['rejected']} |")
    (out / "host_pipeline.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def core(args: argparse.Namespace) -> None:
    cores = os.cpu_count() or 1
    results: dict[str, Any] = {"env": args.env, "cores": cores, "runs": []}
    for n in args.emulators:
        raw_before = run_part("raw", "--seconds", str(args.raw_seconds))["frames_per_s"]
        host = _run(["_core", "--env", args.env, "--emulators", str(n), "--seconds", str(args.seconds),
                     "--warmup", str(args.warmup), "--device", args.device], args.seconds + args.warmup + 180)
        proc = processes(args.env, n, args.seconds, args.warmup)
        raw = (raw_before + run_part("raw", "--seconds", str(args.raw_seconds))["frames_per_s"]) / 2
        limit = raw * min(n, cores)
        for r in (host, proc):
            r["raw_frames_per_s"] = raw
            r["ratio_to_raw_x_busy_cores"] = r["frames_per_s"] / limit
            results["runs"].append(r)
            print(json.dumps(r), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "host_core.json").write_text(json.dumps(results, indent=1))
    lines = ["| emulators | mode | frames/s | raw x min(N, cores) | ratio | mean batch | emulators busy |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results["runs"]:
        busy = r.get("emulator_busy_share")
        lines.append(f"| {r['emulators']} | {r['mode']} | {r['frames_per_s']:,.0f} | "
                     f"{r['raw_frames_per_s'] * min(r['emulators'], cores):,.0f} | {r['ratio_to_raw_x_busy_cores']:.3f} | "
                     f"{r.get('mean_batch', 1):.2f} | {statistics.mean(busy) if busy else '-'} |")
    (out / "host_core.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.host")
    sub = p.add_subparsers(dest="cmd", required=True)
    pl = sub.add_parser("pipeline", help="end to end into the no-gradient learner: host beside one-process actors")
    pl.add_argument("--emulators", type=int, nargs="+", default=[1, 2, 4, 8])
    pl.add_argument("--modes", nargs="+", choices=("host", "process"), default=["host", "process"])
    pl.add_argument("--window", type=float, default=20)
    pl.add_argument("--warm", type=float, default=8)
    pl.add_argument("--raw-seconds", type=float, default=5)
    pl.add_argument("--train", action="store_true", help="also the real learner (training on CPU) with a host of 2")
    pl.add_argument("--out", default="bench_out/host")
    c = sub.add_parser("core", help="the host's core beside one-process actors, no learner")
    c.add_argument("--emulators", type=int, nargs="+", default=[1, 2, 4, 8])
    c.add_argument("--env", default=AIRSTRIKER)
    c.add_argument("--seconds", type=float, default=20)
    c.add_argument("--warmup", type=float, default=5)
    c.add_argument("--raw-seconds", type=float, default=5)
    c.add_argument("--device", default="cpu")
    c.add_argument("--out", default="bench_out/host")
    w = sub.add_parser("_core")
    w.add_argument("--env", default=AIRSTRIKER)
    w.add_argument("--emulators", type=int, default=2)
    w.add_argument("--seconds", type=float, default=10)
    w.add_argument("--warmup", type=float, default=3)
    w.add_argument("--device", default="cpu")
    w.add_argument("--dtype", default="float32")
    w.add_argument("--nice", type=int, default=None)
    w.add_argument("--sched", choices=("batch", "other"), default=None)
    i = sub.add_parser("infer", help="the host's policy: microseconds per sample by batch size and precision")
    i.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    i.add_argument("--seconds", type=float, default=2.0, help="per batch size and precision")
    i.add_argument("--env", default=AIRSTRIKER, help="the game whose model (its action count) is measured")
    a = sub.add_parser("_actor")
    a.add_argument("--env", default=AIRSTRIKER)
    a.add_argument("--seconds", type=float, default=10)
    a.add_argument("--warmup", type=float, default=3)
    a.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    if args.cmd == "pipeline":
        pipeline(args)
    elif args.cmd == "core":
        core(args)
    elif args.cmd == "infer":
        print(json.dumps(inference_worker(args.batches, args.seconds, env=args.env)), flush=True)
    elif args.cmd == "_core":
        opts = {k: v for k, v in (("nice", args.nice), ("sched_batch", None if args.sched is None else
                                                         args.sched == "batch")) if v is not None}
        print(json.dumps(core_worker(args.env, args.emulators, args.seconds, args.warmup, args.device, opts,
                                     args.dtype)), flush=True)
    else:
        print(json.dumps(actor_worker(args.env, args.seconds, args.warmup, args.seed)), flush=True)


if __name__ == "__main__":
    main()
