"""Fleet on Ray (not a test): start-up, restart and reschedule times, and Ray's memory per node.

    python -m benchmarks.ray_fleet [--out bench_out/ray_fleet] [--cpus 8] [--repeats 3]
                                   [--actor-mode host|process]

Needs root: a two-node Ray cluster on this machine (testkit/localcluster.py: the head here, the
second node in its own network and mount namespace), CartPole learners and actors; units are
actor hosts (--emulators-per-host auto: one a node) or, with --actor-mode process, one-process
actors. Measures
  - time from starting `fleet --actors N` (what `./launch.sh N --ray` runs) to all N actors joined
    the learner (actors.jsonl's joined_at), for N = 4 and 16;
  - restart: SIGKILL of one unit's process (a host, or an actor) to all its successors joined
    (Ray restarts the unit);
  - node loss: SIGKILL of the second node's raylet to all its units' successors joined on the head;
  - memory (PSS) of Ray's own processes on each node, idle, next to one unit's Ray worker, its
    host (or actor) process and the host's emulator processes.
Writes ray_fleet.json and prints a markdown summary.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil

from testkit.localcluster import LocalCluster
from testkit.processes import BIN, free_base_port
from testkit.run_files import read_actors

CARTPOLE = ["--env", "CartPole-v1", "--batch-size", "256", "--report-interval", "0.5"]


def pss_mb(pid: int) -> float:
    try:
        return psutil.Process(pid).memory_full_info().pss / 2**20
    except psutil.Error:
        return 0.0


def node_memory(cluster: LocalCluster) -> list[dict]:
    """Per node: PSS of every Ray process there (no units run: these are Ray's own). The
    `ray start --block` process that LocalCluster keeps to supervise a node is counted apart: a
    plain `ray start` exits once the node is up."""
    out = []
    for node in cluster.nodes:
        procs, supervisor = {}, 0.0
        for pid in cluster.node_pids(node):
            try:
                name = psutil.Process(pid).name()
            except psutil.Error:
                continue
            if name in ("sh", "unshare", "ip"):
                continue
            if pid == node.proc.pid or name == "ray":
                supervisor += pss_mb(pid)
                continue
            procs[f"{name}[{pid}]"] = round(pss_mb(pid), 1)
        out.append({"node": node.ip, "head": node.netns is None, "processes": len(procs),
                    "pss_mb": round(sum(procs.values()), 1), "ray_start_block_pss_mb": round(supervisor, 1),
                    "top": dict(sorted(procs.items(), key=lambda kv: -kv[1])[:8])})
    return out


class Run:
    """One fleet in the foreground (`fleet --name NAME --actors N -- learner flags`)."""

    def __init__(self, cluster: LocalCluster, out: Path, name: str, n: int, mode: str):
        self.cluster, self.name, self.n = cluster, name, n
        self.run = out / name
        self.log = out / f"{name}.out"
        self.started = time.time()
        with open(self.log, "wb") as fh:
            self.proc = subprocess.Popen([str(BIN / "fleet"), "--name", name, "--actors", str(n), "--actor-mode",
                                          mode, "--", *CARTPOLE, "--port", str(free_base_port()),
                                          "--run-dir", str(self.run)],
                                         stdout=fh, stderr=subprocess.STDOUT, env=cluster.driver_env(),
                                         start_new_session=True)

    def joined_by(self, ids: set[int] | None = None) -> dict[int, float]:
        """actor id -> when it joined (a host's emulators are one actor id each)."""
        return {a["actor_id"]: a["joined_at"] for a in read_actors(self.run) if ids is None or a["actor_id"] in ids}

    def wait(self, cond, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = cond()
            if value:
                return value
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name}: driver exited: {self.log.read_text()[-2000:]}")
            time.sleep(0.2)
        raise RuntimeError(f"{self.name}: timed out waiting for {what}")

    def stop(self) -> None:
        self.cluster.fleet("stop", "--name", self.name)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)


def all_joined(run: Run) -> float:
    """Seconds from the driver's start to the N-th actor's join."""
    times = run.wait(lambda: (j := run.joined_by()) and len(j) >= run.n and j, 600, f"{run.n} actors joined")
    return sorted(times.values())[run.n - 1] - run.started


def restart_after_kill(cluster: LocalCluster, run: Run, unit: int) -> dict:
    row = next(r for r in cluster.units(run.name) if r["index"] == unit)
    known = set(run.joined_by())
    os.kill(row["child_pid"], signal.SIGKILL)
    killed = time.time()
    k = len(row["actor_ids"])
    new = run.wait(lambda: (s := set(run.joined_by()) - known) and len(s) >= k and s, 120,
                   f"the unit's {k} successors joining")
    return {"unit": unit, "node": row["node_ip"], "actors": k,
            "joined_after_s": round(max(run.joined_by(new).values()) - killed, 2)}


def node_loss(cluster: LocalCluster, run: Run) -> dict:
    node = cluster.nodes[1]
    lost = [r for r in cluster.units(run.name) if r["node_ip"] == node.ip]
    actors = sum(len(r["actor_ids"]) for r in lost)
    known = set(run.joined_by())
    cluster.kill_raylet(node)
    killed = time.time()
    new = run.wait(lambda: (s := set(run.joined_by()) - known) and len(s) >= actors and s, 300,
                   "the lost units' successors joining")
    on_head = run.wait(lambda: all(r["node_ip"] == cluster.head_ip for r in cluster.units(run.name)), 60,
                       "all units on the head")
    assert on_head
    return {"units_lost": len(lost), "actors_lost": actors,
            "all_joined_after_s": round(max(run.joined_by(new).values()) - killed, 2)}


def unit_memory(cluster: LocalCluster, name: str) -> dict:
    rows = cluster.units(name)
    workers = [pss_mb(r["pid"]) for r in rows]
    programs = [pss_mb(r["child_pid"]) for r in rows if r["child_pid"]]
    emulators = [pss_mb(p) for r in rows for p in r["emulator_pids"]]
    totals = [pss_mb(r["child_pid"]) + sum(pss_mb(p) for p in r["emulator_pids"]) for r in rows if r["child_pid"]]
    return {"ray_worker_pss_mb": round(statistics.median(workers), 1),
            "program_pss_mb": round(statistics.median(programs), 1),
            "emulator_pss_mb": round(statistics.median(emulators), 1) if emulators else None,
            "unit_total_pss_mb": round(statistics.median(totals), 1),
            "emulators_per_unit": round(statistics.median(r["emulators"] for r in rows), 1), "units": len(rows)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ray_fleet", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="bench_out/ray_fleet")
    p.add_argument("--cpus", type=int, default=8, help="CPUs each node tells Ray it has (default 8)")
    p.add_argument("--repeats", type=int, default=3, help="SIGKILL restarts to time (default 3)")
    p.add_argument("--actor-mode", choices=("host", "process"), default="host",
                   help="units: actor hosts (default) or one-process actors")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {"machine": {"cores": os.cpu_count(), "python": sys.version.split()[0]},
                    "actor_mode": args.actor_mode}
    t0 = time.monotonic()
    with LocalCluster(out / "cluster", nodes=2, cpus=args.cpus) as cluster:
        result["cluster_up_s"] = round(time.monotonic() - t0, 1)
        time.sleep(10)  # let the daemons settle before measuring them
        result["ray_memory_idle"] = node_memory(cluster)
        result["join"] = {}
        for n in (4, 16):
            run = Run(cluster, out, f"join{n}", n, args.actor_mode)
            try:
                result["join"][n] = round(all_joined(run), 1)
                print(f"{n} actors joined {result['join'][n]} s after `fleet --actors {n}` started", flush=True)
                if n == 4:
                    result["unit_memory"] = unit_memory(cluster, run.name)
                    units = len(cluster.units(run.name))
                    result["restarts"] = [restart_after_kill(cluster, run, i % units) for i in range(args.repeats)]
                    print(f"restarts: {result['restarts']}", flush=True)
                    result["node_loss"] = node_loss(cluster, run)
                    print(f"node loss: {result['node_loss']}", flush=True)
            finally:
                run.stop()
            if n == 4:
                cluster.add_node(1)  # the lost node back for the next run
    (out / "ray_fleet.json").write_text(json.dumps(result, indent=2))
    r = result
    print("\n| what | figure |\n| --- | --- |")
    print(f"| two-node cluster up (`ray start` head + node) | {r['cluster_up_s']} s |")
    for n, s in r["join"].items():
        print(f"| `fleet --actors {n}` to all {n} actors joined | {s} s |")
    ks = [x["joined_after_s"] for x in r["restarts"]]
    what = "host" if args.actor_mode == "host" else "actor"
    print(f"| {what} process SIGKILL to its {r['restarts'][0]['actors']} successor(s) joined (median of {len(ks)}) "
          f"| {statistics.median(ks)} s ({', '.join(map(str, ks))}) |")
    nl = r["node_loss"]
    print(f"| node lost (raylet SIGKILL) to its {nl['units_lost']} unit(s) ({nl['actors_lost']} actors) rejoined "
          f"from the head | {nl['all_joined_after_s']} s |")
    for m in r["ray_memory_idle"]:
        print(f"| Ray's own processes, {'head' if m['head'] else 'worker'} node, idle (PSS) | {m['pss_mb']} MB "
              f"in {m['processes']} processes |")
    u = r["unit_memory"]
    print(f"| one unit: its Ray worker process (PSS) | {u['ray_worker_pss_mb']} MB |")
    print(f"| one unit: its {what} process, CartPole (PSS) | {u['program_pss_mb']} MB |")
    if u["emulator_pss_mb"] is not None:
        print(f"| one unit: each of its emulator processes, CartPole (PSS) | {u['emulator_pss_mb']} MB |")
        print(f"| one unit: host and its {u['emulators_per_unit']:g} emulators together (PSS) | "
              f"{u['unit_total_pss_mb']} MB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
