"""Sample Factory beside `./launch.sh N` on an ALE game, same machine, back to back, one table.

The peer kit (../shared/peers/sample-factory/compare.sh) runs Airstriker only. This is its Atari
counterpart: SF 2.1.1 steps retrofleet's own env stack with the `atari` preset's learner settings
(benchmarks/sf_atari.py), then retrofleet runs, then SF's other configs; each run is held for
--seconds and measured over its steady part (from --skip seconds to its last report), counting
emulator frames that reached the learner (SF: its "Total num frames", samples x 4).

Set-up (once; SF pins gymnasium < 1.0, so it needs a venv of its own):

    python3 -m venv sf-compare/sfv
    sf-compare/sfv/bin/pip install torch==2.13.0
    sf-compare/sfv/bin/pip install sample-factory stable-retro opencv-python-headless ale-py

    .venv/bin/python -m benchmarks.sf_atari_compare --env ALE/Pong-v5 --out bench_out/sf_pong  # ~13 min

SF configs are ENVSxSPLITS with 2 rollout workers (--num_envs_per_worker x --worker_num_splits;
2 splits = SF's double-buffered sampling). Writes OUT/report.txt and OUT/compare.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from testkit.processes import free_base_port
from testkit.run_files import read_metrics

ROOT = Path(__file__).resolve().parents[1]
STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]\[\d+\]")
FPS = re.compile(r"Fps is \(10 sec: \S+, 60 sec: \S+, 300 sec: \S+\)\. Total num frames: (\d+)\.")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def steady_fps(points: list[tuple[float, int]], skip: float) -> dict:
    """Frames/s from the first report at or after `skip` seconds to the last; points: (t, frames)."""
    win = [p for p in points if p[0] >= skip]
    if len(win) < 2 or win[-1][0] <= win[0][0]:
        return {"note": f"fewer than 2 reports after {skip:g} s"}
    (t0, f0), (t1, f1) = win[0], win[-1]
    return {"fps": (f1 - f0) / (t1 - t0), "window": [round(t0), round(t1)], "frames": f1}


def sf_points(log: Path) -> list[tuple[float, int]]:
    t0, out = None, []
    for line in log.read_text(errors="replace").splitlines():
        line = ANSI.sub("", line)
        m = STAMP.match(line)
        if not m:
            continue
        t = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        t0 = t if t0 is None else t0
        f = FPS.search(line)
        if f:
            out.append((t - t0, int(f.group(1))))
    return out


def bounded(cmd: list[str], log: Path, seconds: float, grace_signal: int) -> None:
    """Run `cmd` in its own session for `seconds` (SF stops itself; launch.sh gets SIGINT and stops
    its learner and actors); SIGKILL to the group 60 s later if anything is left."""
    with open(log, "wb") as fh:
        p = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            p.wait(seconds)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, grace_signal)
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    try:
        os.killpg(p.pid, signal.SIGKILL)  # an orphaned worker of that group goes too
    except ProcessLookupError:
        pass


def run_sf(args: argparse.Namespace, config: str, out: Path) -> dict:
    envs, splits = config.split("x")
    name = f"sf_w2_e{config}"
    cmd = [args.sf_python, str(ROOT / "benchmarks" / "sf_atari.py"), "--env_id", args.env, "--experiment", name,
           "--train_dir", str(out / "sf_train"), "--num_workers", "2", "--num_envs_per_worker", envs,
           "--worker_num_splits", splits, "--train_for_seconds", str(int(args.seconds)), "--device", "cpu"]
    bounded(cmd, out / f"{name}.log", args.seconds + 120, signal.SIGTERM)
    return {"system": f"SF 2 workers, {envs} env/worker, {splits} split", **steady_fps(sf_points(out / f"{name}.log"), args.skip)}


def run_rf(args: argparse.Namespace, run: str, out: Path) -> dict:
    """`run` is N or N:FLAGS (./launch.sh N --env ENV FLAGS)."""
    actors, _, flags = run.partition(":")
    tag = f"rf_{actors}" + ("_" + re.sub(r"[^A-Za-z0-9]+", "_", flags).strip("_") if flags else "")
    run_dir = out / tag
    cmd = [str(ROOT / "launch.sh"), actors, "--env", args.env, "--run-dir", str(run_dir),
           "--port", str(free_base_port()), "--report-interval", "5", "--eval-interval", "0", *flags.split()]
    start = time.monotonic()
    bounded(cmd, out / f"{tag}.log", args.seconds + 20, signal.SIGINT)
    rows = read_metrics(run_dir) if (run_dir / "metrics.jsonl").exists() else []
    res = steady_fps([(r["wall_s"], r["frames"]) for r in rows], args.skip)
    lag = rows[-1].get("policy_lag_mean") if rows else None
    return {"system": f"retrofleet ./launch.sh {actors}" + (f" {flags}" if flags else ""), **res,
            "policy_lag_mean": lag, "wall_s": round(time.monotonic() - start)}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sf_atari_compare")
    p.add_argument("--env", default="ALE/Pong-v5")
    p.add_argument("--sf-python", default=str(ROOT / "sf-compare" / "sfv" / "bin" / "python"))
    p.add_argument("--seconds", type=float, default=120, help="length of each run")
    p.add_argument("--skip", type=float, default=30, help="seconds at a run's start left out")
    p.add_argument("--sf-configs", nargs="+", default=["1x1", "2x2", "4x2"])
    p.add_argument("--rf-runs", nargs="+", default=["2", "8"],
                   help="retrofleet runs: N (./launch.sh N) or N:FLAGS, e.g. '8:--precision bf16'")
    p.add_argument("--out", default="bench_out/sf_atari")
    args = p.parse_args()
    if not Path(args.sf_python).exists():
        raise SystemExit(f"error: {args.sf_python} missing: set up Sample Factory's venv (python -m "
                         f"benchmarks.sf_atari_compare --help shows how) or pass --sf-python")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = [run_sf(args, args.sf_configs[0], out)]  # SF, retrofleet, SF again: drift shows
    results += [run_rf(args, r, out) for r in args.rf_runs]
    results += [run_sf(args, c, out) for c in args.sf_configs[1:]]
    best_sf = max((r.get("fps", 0) for r in results if r["system"].startswith("SF")), default=0)
    lines = [f"{args.env}, {args.seconds:g} s a run, frames/s from {args.skip:g} s to the last report; "
             f"{os.cpu_count()} cores", "", "| system | window (s) | emulator frames/s | x SF's best |", "| --- | --- | --- | --- |"]
    for r in results:
        if "fps" in r:
            r["x_sf_best"] = round(r["fps"] / best_sf, 3) if best_sf else None
            lines.append(f"| {r['system']} | {r['window'][0]}-{r['window'][1]} | {r['fps']:,.0f} | {r['x_sf_best']} |")
        else:
            lines.append(f"| {r['system']} | - | - ({r['note']}) | - |")
    (out / "report.txt").write_text("\n".join(lines) + "\n")
    (out / "compare.json").write_text(json.dumps({"env": args.env, "seconds": args.seconds, "skip": args.skip,
                                                  "results": results}, indent=1))
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
