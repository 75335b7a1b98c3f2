"""The pipeline against the floor of its parts, every figure from one run (Airstriker or Pong).

    python -m benchmarks.floor [--quick] [--actors 2 8] [--profile] [--out DIR] [--env ALE/Pong-v5]

First each part alone, each in a process of its own, one after another: the raw emulator, the
one-process actor's step split (emulate 4 frames, preprocess, inference at batch 1 with
sampling, frame stack and bookkeeping, encode, PUSH to PULL on loopback), the host's policy at
batch K, the learner's side of a rollout (decode + validate, collate) and its update
(learner.trainer.Trainer on a real batch with the run's loss and settings, the learner's torch
threads). Then the real pipeline: `./launch.sh N` for each N, frames/s over a window read from
metrics.jsonl (policy lag and stale drops beside it). It prints a table, writes DIR/floor.json
and ends with the line `floor ratio: X` for the first N (2 by default: `./launch.sh 2`).

The floor. Every frame costs CPU in the actor (a = the actor parts per agent step / frame
skip, with inference at the batch the run uses: 1 for a one-process actor, K = N / cores for
an actor host of N emulators, where about N / cores are ready each round) and in the learner
(l = update + decode + collate per frame). The learner trains on the same cores, so

    floor = min(cores / (a + l),  N / a,  1 / u)

frames/s: the cores shared by all work, no more than N actors' cores (an actor is one
process), and the learner's update thread alone (u = the update's CPU time per frame divided by
the learner's torch threads). Every part is measured in CPU time (process_time), not wall time:
the floor is a CPU budget, and on a shared machine wall time counts other people's work. It assumes perfect overlap and no scheduler, wait or copy overhead,
so the pipeline's ratio to it is what those cost. Parts and pipelines run back to back in one
invocation, so a loaded machine slows both; compare ratios, not frames/s, across runs.

With the other cores busy. Parts measured alone run faster than the same parts with every core
working (shared caches and memory bandwidth; virtual cores that share physical ones), so the
actor's split and the learner's update are measured a second time while the other cores do an
actor's work (step the game, run the policy: `bench_parts load`), and the table shows the floor
from those (`floor, cores busy`) and the pipeline's ratio to it beside the strict one. The last
line stays the ratio to the floor of the parts alone.

--profile records one actor (actor_0, or the actor host) and the learner with py-spy for
the window of each pipeline run: DIR/profile_N_{actor,learner}.txt (collapsed stacks, flame
graph input) and a top list of functions by own time (…_top.txt).

On a shared machine a run gets fewer cores than it has: the CPU time its processes used over the
window (psutil, launch.sh's whole process tree) gives `cores used`, and the table shows the ratio
to the floor at that many cores beside the ratio at all of them (the last line's figure).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.bench_parts import ENV, ENV_VAR, SKIP, _timed, bench_config, run_part
from testkit.processes import free_base_port

ROOT = Path(__file__).resolve().parents[1]
MODES = {  # seconds per measurement
    "quick": {"raw": 2, "actor": 6, "infer": 1.5, "learner_side": 2, "updates": 2, "warm": 8, "window": 10},
    "full": {"raw": 10, "actor": 30, "infer": 6, "learner_side": 8, "updates": 8, "warm": 15, "window": 40},
}


# ---------------------------------------------------------------------------- parts alone


def learner_side(seconds: float) -> dict[str, Any]:
    """Microseconds per rollout of what the learner does to a rollout besides the update:
    decode + validate (as Learner.accept, minus the sender check) and collate into a batch."""
    from benchmarks.bench_parts import _real_messages
    from common import protocol
    from learner.batcher import collate
    from learner.server import specs

    cfg = bench_config()
    spec = specs(cfg)[2]
    msgs = _real_messages(8)
    i = 0

    def accept() -> protocol.Rollout:
        nonlocal i
        i += 1
        return protocol.validate_rollout(protocol.decode(msgs[i % len(msgs)]), spec, latest_version=0)

    per_msg = _timed(accept, seconds / 2)
    n = cfg.rollouts_per_batch
    rollouts = [accept() for _ in range(n)]
    per_batch = _timed(lambda: collate(rollouts, 0), seconds / 2)
    return {"decode_us_per_rollout": 1e6 * per_msg, "collate_us_per_rollout": 1e6 * per_batch / n,
            "steps_per_rollout": rollouts[0].steps}


def host_infer(batches: list[int], seconds: float) -> dict[str, float]:
    """Microseconds per sample of the actor host's policy (float32, one thread) at each batch."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks.host", "infer", "--seconds", str(seconds),
                           "--batches", *map(str, batches), "--env", ENV], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmarks.host infer exited with {proc.returncode}: {proc.stderr.strip()[-300:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {str(b): out[f"float32 {b}"] for b in batches}


def _floor_part(part: str, *args: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.floor", "--part", part, *args],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{part} exited with {proc.returncode}: {proc.stderr.strip()[-300:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@contextmanager
def other_cores_busy(cores: int) -> Iterator[None]:
    """`cores - 1` processes doing an actor's work (bench_parts load: step the game, run the
    policy) beside a measurement: a part's cost with every core busy, as in the pipeline (shared
    caches and memory bandwidth; virtual cores whose physical cores the host shares)."""
    procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.bench_parts", "load", "--seconds", "900"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(cores - 1)]
    try:
        time.sleep(3)  # past their start-up (imports, the emulator, the model)
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def _busy(cores: int, job: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    with other_cores_busy(cores):
        return job() | {"busy_cores": cores - 1}


def host_batch(n: int, cores: int) -> int:
    """Emulators an actor host of n finds ready a round, about: n / cores (at least 1)."""
    return max(1, n // cores) if n >= 2 * cores else 1


def parts(t: dict[str, float], counts: list[int], cores: int) -> dict[str, Any]:
    batches = sorted({1, *(host_batch(n, cores) for n in counts)})
    out: dict[str, Any] = {}
    for name, job in (("raw", lambda: run_part("raw", "--seconds", str(t["raw"]))),
                      ("actor", lambda: run_part("actor", "--seconds", str(t["actor"]))["split"]),
                      ("actor_busy", lambda: _busy(cores, lambda: run_part("actor", "--seconds", str(t["actor"]))["split"])),
                      ("trainer_busy", lambda: _busy(cores, lambda: run_part("trainer", "--count", str(int(t["updates"]))))),
                      ("infer", lambda: host_infer(batches, t["infer"])),
                      ("learner_side", lambda: _floor_part("learner_side", "--seconds", str(t["learner_side"]))),
                      ("trainer", lambda: run_part("trainer", "--count", str(int(t["updates"]))))):
        start = time.monotonic()
        print(f"[floor] {name} ...", flush=True)
        out[name] = job()
        print(f"[floor] {name} done in {time.monotonic() - start:.1f} s", flush=True)
    return out


def floor(p: dict[str, Any], n: int, cores: int, cpu: float | None = None, busy: bool = False) -> dict[str, Any]:
    """The floor of `./launch.sh n` on `cores` from the parts (module docstring): frames/s and its
    terms; `cpu`: the cores the work may share, when fewer than the machine's (default: all);
    `busy`: with the actor's parts and the update as measured with the other cores busy, the host's
    batched inference scaled by what batch 1 cost more there."""
    us = p["actor_busy" if busy else "actor"]["us_per_step"]
    k = host_batch(n, cores)
    infer = us["infer"] if k == 1 else p["infer"][str(k)]  # batch 1 measured in the actor loop itself
    if busy and k > 1:
        infer *= us["infer"] / p["actor"]["us_per_step"]["infer"]
    actor_step = us["emulate"] + us["preprocess"] + infer + us["other"] + us["encode"] + us["send"]
    tr = p["trainer_busy" if busy else "trainer"]["cpu"]
    frames_per_batch = p["trainer"]["batch"] * SKIP
    ls = p["learner_side"]
    update_cpu = 1e6 * tr["seconds_per_update"] / frames_per_batch  # CPU us a frame, all its threads
    learner = update_cpu + (ls["decode_us_per_rollout"] + ls["collate_us_per_rollout"]) / (ls["steps_per_rollout"] * SKIP)
    a = actor_step / SKIP
    bounds = {"cores": 1e6 * (cores if cpu is None else cpu) / (a + learner), "actors": 1e6 * n / a,
              "learner_thread": 1e6 * tr["threads"] / update_cpu}
    which = min(bounds, key=bounds.get)
    return {"frames_per_s": bounds[which], "bound": which, "bounds": bounds, "actor_us_per_frame": a,
            "learner_us_per_frame": learner, "host_batch": k, "infer_us_per_sample": infer}


# ---------------------------------------------------------------------------- the pipeline


def _rows(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    text = path.read_text() if path.exists() else ""
    return [json.loads(x) for x in text.splitlines() if x.strip()]


def _pids(run_dir: Path) -> tuple[int | None, int | None]:
    """(learner pid, actor_0 / host pid) of a launch.sh run, from actors.jsonl and the process table."""
    import psutil

    learner = actor = None
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if str(run_dir) in cmd and "learner" in cmd:
            learner = proc.info["pid"]
    path = run_dir / "actors.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []
    if rows:
        actor = min(rows, key=lambda r: r["actor_id"])["pid"]
    return learner, actor


def _tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and all its descendants alive now."""
    import psutil

    total = 0.0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    for proc in procs:
        try:
            total += sum(proc.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


def _py_spy(pid: int, seconds: float, path: Path) -> subprocess.Popen | None:
    exe = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if exe is None:
        return None
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200",
                             "--format", "raw", "--output", str(path), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def top_functions(collapsed: Path, limit: int = 25) -> str:
    """The functions that were running (own time) most often in py-spy's collapsed stacks."""
    own, total = Counter(), 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        own[stack.split(";")[-1]] += int(count)
        total += int(count)
    lines = [f"{100 * c / max(total, 1):5.1f} %  {fn}" for fn, c in own.most_common(limit)]
    return f"{total} samples, own time\n" + "\n".join(lines) + "\n"


def launch_run(n: int, t: dict[str, float], out: Path, profile: bool, extra: list[str], env: str = ENV) -> dict[str, Any]:
    """`./launch.sh n --env env`: frames/s between two metrics rows `window` s apart, after `warm`."""
    run_dir = (out / f"launch_{n}").resolve()
    shutil.rmtree(run_dir, ignore_errors=True)
    log = open(out / f"launch_{n}.out", "wb")
    p = subprocess.Popen([str(ROOT / "launch.sh"), str(n), "--env", env, "--run-dir", str(run_dir),
                          "--port", str(free_base_port()), "--report-interval", "1", *extra],
                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
    try:
        deadline = time.monotonic() + 180
        while not any(r["frames"] > 0 for r in _rows(run_dir)):
            if p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"./launch.sh {n} made no frames (see {out / f'launch_{n}.out'})")
            time.sleep(0.5)
        time.sleep(t["warm"])
        r0, c0 = _rows(run_dir)[-1], _tree_cpu(p.pid)
        spies = []
        if profile:
            for who, pid in zip(("learner", "actor"), _pids(run_dir), strict=True):
                if pid is not None:
                    path = out / f"profile_{n}_{who}.txt"
                    spies.append((path, _py_spy(pid, t["window"], path)))
        time.sleep(t["window"])
        r1, c1 = _rows(run_dir)[-1], _tree_cpu(p.pid)
        for path, spy in spies:
            if spy is not None:
                spy.wait(t["window"] + 30)
                if path.exists():
                    path.with_name(path.stem + "_top.txt").write_text(top_functions(path))
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGINT)
            try:
                p.wait(40)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        log.close()
    wall = r1["wall_s"] - r0["wall_s"]
    return {"actors": n, "frames_per_s": (r1["frames"] - r0["frames"]) / wall, "window_s": wall,
            "updates": r1["updates"] - r0["updates"], "cores_used": (c1 - c0) / wall, "policy_lag_mean": r1["policy_lag_mean"],
            "policy_lag_max": r1["policy_lag_max"], "dropped_stale": r1["dropped_stale"] - r0["dropped_stale"]}


# ---------------------------------------------------------------------------- report


def report(p: dict[str, Any], runs: list[dict[str, Any]], cores: int) -> list[str]:
    us, raw = p["actor"]["us_per_step"], p["raw"]
    lines = [f"parts alone ({cores} cores; CPU us per emulator frame, frame skip {SKIP}):",
             f"  raw emulator                       {raw['us_per_frame']:8.1f}",
             f"  emulate (4 frames / {SKIP})             {us['emulate'] / SKIP:8.1f}",
             f"  preprocess (max, grey, resize)     {us['preprocess'] / SKIP:8.1f}",
             f"  inference batch 1 + sampling       {us['infer'] / SKIP:8.1f}"]
    lines += [f"  inference batch {b:<3} (host)         {v / SKIP:8.1f}" for b, v in p["infer"].items() if b != "1"]
    ls, tr = p["learner_side"], p["trainer"]
    per_roll = ls["steps_per_rollout"] * SKIP
    lines += [f"  frame stack, bookkeeping           {us['other'] / SKIP:8.1f}",
              f"  encode rollout                     {us['encode'] / SKIP:8.1f}",
              f"  the wire (PUSH -> PULL)            {us['send'] / SKIP:8.1f}",
              f"  learner decode + validate          {ls['decode_us_per_rollout'] / per_roll:8.1f}",
              f"  learner collate                    {ls['collate_us_per_rollout'] / per_roll:8.1f}",
              f"  learner update ({tr['cpu']['threads']} thread(s), batch {tr['batch']}) "
              f"{1e6 * tr['cpu']['seconds_per_update'] / (tr['batch'] * SKIP):8.1f}"]
    if "actor_busy" in p:
        b, tb = p["actor_busy"]["us_per_step"], p["trainer_busy"]["cpu"]["seconds_per_update"]
        lines += [f"with the other {p['actor_busy']['busy_cores']} core(s) doing an actor's work:",
                  f"  emulate (4 frames / {SKIP})             {b['emulate'] / SKIP:8.1f}  ({b['emulate'] / us['emulate']:.2f}x alone)",
                  f"  preprocess (max, grey, resize)     {b['preprocess'] / SKIP:8.1f}  ({b['preprocess'] / us['preprocess']:.2f}x)",
                  f"  inference batch 1 + sampling       {b['infer'] / SKIP:8.1f}  ({b['infer'] / us['infer']:.2f}x)",
                  f"  learner update                     {1e6 * tb / (tr['batch'] * SKIP):8.1f}  "
                  f"({tb / tr['cpu']['seconds_per_update']:.2f}x)"]
    busy = all("floor_busy" in r for r in runs)
    lines += ["", "| run | floor frames/s (bound) | pipeline frames/s | ratio | cores used | ratio at the CPU used "
              + ("| floor, cores busy | ratio to it " if busy else "") + "| lag mean / max | stale dropped |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |" + (" --- | --- |" if busy else "")]
    for r in runs:
        f = r["floor"]
        lines.append(f"| ./launch.sh {r['actors']} | {f['frames_per_s']:,.0f} ({f['bound']}) | "
                     f"{r['frames_per_s']:,.0f} | {r['ratio']:.2f} | {r['cores_used']:.2f} | {r['ratio_at_cpu_used']:.2f} | "
                     + (f"{r['floor_busy']:,.0f} | {r['ratio_busy']:.2f} | " if busy else "")
                     + f"{r['policy_lag_mean']} / {r['policy_lag_max']} | {r['dropped_stale']} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.floor", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short measurements: about two minutes in all")
    ap.add_argument("--actors", type=int, nargs="+", default=[2, 8], help="the ./launch.sh N runs (first: the ratio)")
    ap.add_argument("--profile", action="store_true", help="py-spy of the learner and one actor in each run")
    ap.add_argument("--out", default="bench_out/floor")
    ap.add_argument("--env", default=ENV, help="the game: Airstriker-Genesis-v0 (default) or an ALE game (ALE/Pong-v5)")
    ap.add_argument("--parts", metavar="JSON", help="reuse the parts of an earlier run (its parts.json or floor.json)")
    # internal: one part in this process; "floor" and "top" print the arithmetic alone (tests)
    ap.add_argument("--part", choices=("learner_side", "floor", "top"), help=argparse.SUPPRESS)
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1, help=argparse.SUPPRESS)
    ap.add_argument("--profile-file", help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=2.0, help=argparse.SUPPRESS)
    ap.add_argument("extra", nargs="*", help="more learner flags for the runs (after --)")
    a = ap.parse_args(argv)
    if a.part == "learner_side":
        print(json.dumps(learner_side(a.seconds)), flush=True)
        return 0
    if a.part == "floor":
        p = json.loads(Path(a.parts).read_text())["parts"]
        busy = {f"{n} busy": floor(p, n, a.cores, busy=True) for n in a.actors} if "actor_busy" in p else {}
        print(json.dumps({str(n): floor(p, n, a.cores) for n in a.actors} | busy), flush=True)
        return 0
    if a.part == "top":
        print(top_functions(Path(a.profile_file)), end="", flush=True)
        return 0
    if any(n < 1 for n in a.actors):
        ap.error(f"--actors must be 1 or more, got {a.actors}")
    t = MODES["quick" if a.quick else "full"]
    cores = os.cpu_count() or 1
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ["RETROFLEET_BENCH_CLOCK"] = "cpu"  # every part in CPU time (bench_parts._timed)
    os.environ[ENV_VAR] = a.env  # the parts run in processes of their own, on this game
    if a.parts:  # the parts of an earlier run (say, to rerun only the pipelines)
        saved = json.loads(Path(a.parts).read_text())
        if saved.get("env", ENV) != a.env:
            ap.error(f"--parts {a.parts} measured {saved.get('env', ENV)}, not --env {a.env}")
        p = saved["parts"]
    else:
        p = parts(t, a.actors, cores)
        (out / "parts.json").write_text(json.dumps({"env": a.env, "parts": p}, indent=1))
    runs = []
    for n in a.actors:
        print(f"[floor] ./launch.sh {n} ...", flush=True)
        r = launch_run(n, t, out, a.profile, a.extra, a.env)
        r["floor"] = floor(p, n, cores)
        r["ratio"] = r["frames_per_s"] / r["floor"]["frames_per_s"]
        # on a shared machine the run gets fewer cores than it has: the floor at the CPU it got
        r["floor_at_cpu_used"] = floor(p, n, cores, min(r["cores_used"], cores))["frames_per_s"]
        r["ratio_at_cpu_used"] = r["frames_per_s"] / r["floor_at_cpu_used"]
        if "actor_busy" in p:  # parts of older runs lack it
            r["floor_busy"] = floor(p, n, cores, busy=True)["frames_per_s"]
            r["ratio_busy"] = r["frames_per_s"] / r["floor_busy"]
        runs.append(r)
    (out / "floor.json").write_text(json.dumps({"env": a.env, "cores": cores, "mode": "quick" if a.quick else "full",
                                                "parts": p, "runs": runs}, indent=1))
    print(f"{a.env}:")
    print("\n".join(report(p, runs, cores)))
    print(f"floor ratio: {runs[0]['ratio']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
