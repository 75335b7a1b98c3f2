"""Flood benchmark (not a test): what each kind of flood costs a training learner.

    python -m benchmarks.flood                          # Airstriker, 30 s a flood, all floods
    python -m benchmarks.flood --env CartPole-v1 --seconds 20 --only hellos,bombs

For each flood, on a fresh learner with one training actor: the learner's RSS and file
descriptors before and at their peak, updates a second before and during the flood, and how
long a real actor started 2 s into the flood takes to be counted (`actors` in metrics.jsonl).
Floods (tests/floods.py): 50 DEALER sockets sending hellos; 1,100 half-open TCP connections
(with the learner's default fd limit, and with a hard limit of 1,024 so that it runs out);
msgpack object bombs as large as the rollout socket admits; forged rollouts (well-formed,
actor id 0, a wrong token). Writes flood.json and flood.md to --out.

    python -m benchmarks.flood --drain --env CartPole-v1 --seconds 5    # a hello flood's backlog

`--drain`: a learner with no actors, a hello flood of `--seconds`, then how long the learner
takes to drop what the flood left in its sockets' kernel buffers (its `rate_limited` counter
standing still for 3 s), and the rate it dropped them at. Writes drain.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from common import protocol
from common.config import Config
from learner.server import specs
from testkit.floods import ConnectionFlood, HelloFlood, PushFlood, object_bomb
from testkit.processes import BIN, free_base_port, stop_processes
from testkit.rollouts import cartpole_rollout
from testkit.run_files import last_metrics

FLOODS = ("none", "hellos", "connections", "connections_fd1024", "bombs", "forged")


def _start(args: list[str], log: Path, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(args, stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env, **kw)


def _fd_limit(n: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))

    return apply


def _flood(kind: str, port: int, rollout_bytes: int):
    if kind == "hellos":
        return HelloFlood(port, sockets=50)
    if kind.startswith("connections"):
        return ConnectionFlood(port, 1100)
    if kind == "bombs":
        return PushFlood(port, object_bomb(rollout_bytes))
    if kind == "forged":
        return PushFlood(port, protocol.encode_rollout(cartpole_rollout(0), token="0" * 32))
    return None


def measure(kind: str, env_id: str, seconds: float, out: Path) -> dict[str, Any]:
    run = out / kind
    run.mkdir(parents=True, exist_ok=True)
    port = free_base_port()
    kw = {"preexec_fn": _fd_limit(1024)} if kind == "connections_fd1024" else {}
    learner = _start([str(BIN / "learner"), "--env", env_id, "--port", str(port), "--run-dir", str(run / "run"),
                      "--report-interval", "1", "--quiet"], run / "learner.log", **kw)
    procs = [learner]
    try:
        deadline = time.monotonic() + 120
        while "learner ready" not in (run / "learner.log").read_text():
            if learner.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((run / "learner.log").read_text())
            time.sleep(0.2)
        procs.append(_start([str(BIN / "actor"), "--learner", f"tcp://127.0.0.1:{port}"], run / "actor0.log"))
        while last_metrics(run / "run").get("updates", 0) < 3:
            time.sleep(0.5)
        proc = psutil.Process(learner.pid)
        m0, t0 = last_metrics(run / "run"), time.monotonic()
        time.sleep(10)
        m1, t1 = last_metrics(run / "run"), time.monotonic()
        base = {"rss_mb": proc.memory_info().rss / 2**20, "fds": proc.num_fds(),
                "updates_per_s": (m1["updates"] - m0["updates"]) / (t1 - t0)}
        flood = _flood(kind, port, specs(Config(env=env_id))[2].max_message_bytes)
        if flood is not None:
            flood.start()
        start = time.monotonic()
        peak_rss, peak_fds, joined = base["rss_mb"], base["fds"], None
        joiner = None
        u_start = last_metrics(run / "run")["updates"]
        while time.monotonic() - start < seconds:
            if joiner is None and time.monotonic() - start >= 2:
                joiner = _start([str(BIN / "actor"), "--learner", f"tcp://127.0.0.1:{port}"], run / "actor1.log")
                procs.append(joiner)
                joiner_at = time.monotonic()
            if joiner is not None and joined is None and last_metrics(run / "run").get("actors") == 2:
                joined = time.monotonic() - joiner_at
            if learner.poll() is None:
                peak_rss = max(peak_rss, proc.memory_info().rss / 2**20)
                peak_fds = max(peak_fds, proc.num_fds())
            time.sleep(0.25)
        u_end, t_end = last_metrics(run / "run")["updates"], time.monotonic()
        if flood is not None:
            flood.stop()
        time.sleep(3)
        row = last_metrics(run / "run")
        return {"flood": kind, "before": base, "peak_rss_mb": peak_rss, "peak_fds": peak_fds,
                "updates_per_s_during": (u_end - u_start) / (t_end - start), "join_s": joined,
                "sent": getattr(flood, "sent", len(getattr(flood, "socks", []))) if flood else 0,
                "alive": learner.poll() is None, "rate_limited": row.get("rate_limited"),
                "rejected_messages": row.get("rejected_messages"),
                "actors_jsonl_lines": len((run / "run" / "actors.jsonl").read_text().splitlines())}
    finally:
        stop_processes(procs)


def drain(env_id: str, seconds: float, out: Path) -> dict[str, Any]:
    run, port = out / "drain_run", free_base_port()
    learner = _start([str(BIN / "learner"), "--env", env_id, "--port", str(port), "--run-dir", str(run),
                      "--report-interval", "1", "--overwrite"], out / "drain_learner.log")
    try:
        deadline = time.monotonic() + 120
        while not last_metrics(run):
            assert time.monotonic() < deadline, "the learner never reported"
            time.sleep(0.5)
        flood = HelloFlood(port)
        flood.start()
        time.sleep(seconds)
        flood.stop()
        ended = time.monotonic()
        at_end = last_metrics(run)["rate_limited"]
        seen = [at_end]
        while time.monotonic() - ended < 600:
            time.sleep(1)
            seen.append(last_metrics(run)["rate_limited"])
            if len(seen) > 3 and seen[-1] == seen[-4]:
                break
        drain_s = time.monotonic() - ended - 3
        return {"flood_s": seconds, "sent": flood.sent, "dropped": seen[-1], "dropped_during_flood": at_end,
                "backlog": seen[-1] - at_end, "drain_s": round(drain_s, 1),
                "drop_rate_per_s": round((seen[-1] - at_end) / max(drain_s, 1e-3)), "alive": learner.poll() is None}
    finally:
        stop_processes([learner])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.flood", description=__doc__.split("\n")[0])
    p.add_argument("--env", default="Airstriker-Genesis-v0")
    p.add_argument("--seconds", type=float, default=30, help="length of each flood")
    p.add_argument("--only", default=",".join(FLOODS), help=f"comma-separated subset of {','.join(FLOODS)}")
    p.add_argument("--out", default="bench_out/flood")
    p.add_argument("--drain", action="store_true", help="how long a hello flood's backlog takes to drop")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.drain:
        r = drain(args.env, args.seconds, out)
        (out / "drain.json").write_text(json.dumps(r, indent=1))
        print(json.dumps(r), flush=True)
        return 0 if r["alive"] else 1
    results = []
    for kind in args.only.split(","):
        r = measure(kind, args.env, args.seconds, out)
        results.append(r)
        print(json.dumps(r), flush=True)
    (out / "flood.json").write_text(json.dumps(results, indent=1))
    lines = ["| flood | learner RSS before -> peak (MB) | fds before -> peak | updates/s before -> during "
             "| real actor counted after (s) | learner alive |", "| --- | --- | --- | --- | --- | --- |"]
    for r in results:
        b = r["before"]
        joined = "-" if r["join_s"] is None else f"{r['join_s']:.1f}"
        lines.append(f"| {r['flood']} | {b['rss_mb']:.0f} -> {r['peak_rss_mb']:.0f} | {b['fds']} -> "
                     f"{r['peak_fds']} | {b['updates_per_s']:.2f} -> {r['updates_per_s_during']:.2f} | "
                     f"{joined} | {'yes' if r['alive'] else 'NO'} |")
    (out / "flood.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(r["alive"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
