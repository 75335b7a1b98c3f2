"""Performance benchmark of retrofleet on Airstriker-Genesis-v0: every figure from one run.

    python -m benchmarks.bench [--quick|--full] [--out DIR] [--only raw,actor,...] [--scale F]

writes DIR/bench.json and DIR/bench.md. Each measurement runs in processes of its own
(`benchmarks.bench_parts`), one after another, so no two compete for the cores; ratios are only
ever taken between figures of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.bench_parts import run_part
from testkit.processes import free_base_port, stop_processes

BIN = Path(sys.executable).parent
ITEMS = ("raw", "actor", "ingest", "weights", "trainer", "train_run", "scaling", "vector")
# seconds (or counts) per item; --scale multiplies the seconds
MODES = {
    "quick": {"raw": 2, "actor": 4, "ingest": 3, "weights": 8, "updates": 2, "vector": 3,
              "warm": 1.5, "window": 3, "memory": 20},
    "full": {"raw": 30, "actor": 40, "ingest": 30, "weights": 50, "updates": 10, "vector": 40,
             "warm": 10, "window": 40, "memory": 600},
}
TARGETS = {"actor_efficiency": 0.8, "ingest_fps": 200_000, "bytes_per_step": 2048,
           "weights_ms": 50.0, "actor_rss_mib": 400.0}


# ---------------------------------------------------------------------------- pipelines


class RssSampler(threading.Thread):
    """Peak resident memory of processes, sampled with psutil every 0.25 s."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peaks: dict[int, int] = {}
        self.halt = threading.Event()

    def run(self) -> None:
        import psutil

        while not self.halt.wait(0.25):
            for pid in list(self.peaks):
                try:
                    self.peaks[pid] = max(self.peaks[pid], psutil.Process(pid).memory_info().rss)
                except psutil.Error:
                    pass

    def high_water(self, pid: int) -> None:
        """Fold in the kernel's own peak (VmHWM), read before the process is stopped."""
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.peaks[pid] = max(self.peaks[pid], int(line.split()[1]) * 1024)
        except OSError:
            pass


class Session:
    """A learner process plus actors added one at a time; figures read from metrics.jsonl."""

    def __init__(self, out: Path, name: str, learner_cmd: list[str]):
        self.run_dir = out / "runs" / name
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self.run_dir.mkdir(parents=True)
        self.port = free_base_port()
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.started = time.monotonic()
        self.rss = RssSampler()
        self.actors: list[subprocess.Popen] = []
        log = self.run_dir / "learner.log"
        with open(log, "w") as fh:
            self.learner = subprocess.Popen([*learner_cmd, "--port", str(self.port), "--run-dir",
                                             str(self.run_dir)], stdout=fh, stderr=subprocess.STDOUT, env=self.env)
        self.rss.peaks[self.learner.pid] = 0
        self.rss.start()
        try:
            self._wait(lambda: "learner ready" in log.read_text(), self.learner, 90, log)
        except RuntimeError:
            self.close()
            raise

    def _wait(self, cond, proc: subprocess.Popen, timeout: float, log: Path) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{log.name}: " + " | ".join(log.read_text().splitlines()[-3:]))
            time.sleep(0.1)

    def add_actor(self, *flags: str) -> subprocess.Popen:
        """Start the real `actor` command (with `flags`, say `--emulators 4` for an actor host);
        return once it acts (has the first weights)."""
        log = self.run_dir / f"actor_{len(self.actors)}.log"
        with open(log, "w") as fh:
            p = subprocess.Popen([str(BIN / "actor"), "--learner", f"tcp://127.0.0.1:{self.port}", *flags],
                                 stdout=fh, stderr=subprocess.STDOUT, env=self.env)
        self.actors.append(p)
        self.rss.peaks[p.pid] = 0
        self._wait(lambda: "; acting" in log.read_text(), p, 90, log)
        return p

    def _rows(self) -> list[dict[str, Any]]:
        path = self.run_dir / "metrics.jsonl"
        text = path.read_text() if path.exists() else ""
        return [json.loads(x) for x in text.splitlines() if x.strip()]

    def _next_row(self) -> dict[str, Any]:
        n = len(self._rows())
        self._wait(lambda: len(self._rows()) > n, self.learner, 30, self.run_dir / "learner.log")
        return self._rows()[-1]

    def _actor_cpu(self) -> float:
        """CPU seconds of the actor processes and their children (an actor host's emulators)."""
        import psutil

        total = 0.0
        for a in self.actors:
            try:
                p = psutil.Process(a.pid)
                total += sum(p.cpu_times()[:2]) + sum(sum(c.cpu_times()[:2]) for c in p.children(recursive=True))
            except psutil.Error:
                pass
        return total

    def window(self, seconds: float) -> dict[str, Any]:
        """Frames/s, updates and learner (and actor) CPU between two metrics rows about
        `seconds` apart."""
        import psutil

        learner = psutil.Process(self.learner.pid)
        r0, c0, a0 = self._next_row(), sum(learner.cpu_times()[:2]), self._actor_cpu()
        time.sleep(max(seconds - 1.0, 0.0))
        r1, c1, a1 = self._next_row(), sum(learner.cpu_times()[:2]), self._actor_cpu()
        wall = r1["wall_s"] - r0["wall_s"]
        return {"actors": len(self.actors), "seconds": wall, "frames_per_s": (r1["frames"] - r0["frames"]) / wall,
                "updates": r1["updates"] - r0["updates"], "learner_cpu_cores": (c1 - c0) / wall,
                "actors_cpu_cores": (a1 - a0) / wall, "policy_lag_max": r1["policy_lag_max"],
                "rejected": r1["rejected_messages"]}

    def close(self) -> dict[str, float]:
        """Stop everything (SIGTERM, then kill); the peak RSS of each process in MiB."""
        procs = [self.learner, *self.actors]
        for p in procs:
            self.rss.high_water(p.pid)
        self.rss.halt.set()
        stop_processes(procs, timeout=20)
        mib = {p.pid: self.rss.peaks[p.pid] / 2**20 for p in procs}
        return {"learner": mib[self.learner.pid], "actors": [mib[p.pid] for p in self.actors]}


def train_run(out: Path, t: dict[str, float]) -> dict[str, Any]:
    """The real learner (default flags, it trains) with one actor, then two (memory, learner share)."""
    s = Session(out, "train", [str(BIN / "learner"), "--quiet", "--report-interval", "1"])
    try:
        s.add_actor()
        time.sleep(t["warm"])
        one = s.window(t["window"])
        s.add_actor()
        time.sleep(t["warm"])
        two = s.window(max(t["memory"] - (time.monotonic() - s.started), t["window"]))
    finally:
        rss = s.close()
    return {"one_actor": one, "two_actors": two, "rss_mib": rss, "seconds": time.monotonic() - s.started}


def scaling(out: Path, t: dict[str, float], counts: list[int]) -> dict[str, Any]:
    """Total frames/s with 1, 2, 4, ... actors into the learner without its gradient step."""
    s = Session(out, "scaling", [sys.executable, "-m", "benchmarks.bench_parts", "consumer"])
    windows = {}
    try:
        for n in counts:
            while len(s.actors) < n:
                s.add_actor()
            time.sleep(t["warm"])
            windows[str(n)] = s.window(t["window"])
    finally:
        rss = s.close()
    return {"windows": windows, "rss_mib": rss}


def actor_counts(cores: int, quick: bool) -> list[int]:
    """1, 2, 4, ... up to the cores (and the cores themselves); quick: 1 and 2."""
    if quick:
        return sorted({1, min(2, cores)})
    counts, n = {cores}, 1
    while n <= cores:
        counts.add(n)
        n *= 2
    return sorted(counts)


# ---------------------------------------------------------------------------- report


def derive(r: dict[str, Any]) -> dict[str, Any]:
    """Ratios, each between figures of this run."""
    d: dict[str, Any] = {}
    raw = r.get("raw", {}).get("frames_per_s")
    windows = r.get("scaling", {}).get("windows", {})
    one = windows.get("1", {}).get("frames_per_s")
    tr = r.get("train_run")
    if raw and one:
        d["actor_efficiency_no_train"] = one / raw
    if raw and tr:
        d["actor_efficiency_training"] = tr["one_actor"]["frames_per_s"] / raw
    if raw and "actor" in r:
        d["actor_ceiling_over_raw"] = r["actor"]["split"]["ceiling_frames_per_s"] / raw
    if one:
        d["scaling"] = {n: {"frames_per_s": w["frames_per_s"], "speedup": w["frames_per_s"] / one,
                            "efficiency_per_actor": w["frames_per_s"] / one / int(n)} for n, w in windows.items()}
    if tr and "trainer" in r:
        two = tr["two_actors"]
        busy = two["updates"] * r["trainer"]["cpu"]["seconds_per_update"] / two["seconds"]
        d["learner_busy_share_estimate"] = min(busy, 1.0)
    vec = r.get("vector")
    if vec and str(vec["envs"]) in windows:
        ours = windows[str(vec["envs"])]["frames_per_s"]
        d["ours_over_vector_env"] = ours / vec["frames_per_s"]
    return d


def _n(x: float, digits: int = 0) -> str:
    return f"{x:,.{digits}f}"


def _verdict(value: float, target: float, higher_is_better: bool) -> str:
    ratio = value / target
    ok = ratio >= 1 if higher_is_better else ratio <= 1
    return f"{ratio:.2f} of target: {'meets' if ok else 'MISSES'}"


def table_rows(rep: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    r, d = rep["results"], rep["derived"]
    rows: list[tuple[str, str, str, str]] = []
    raw = r.get("raw", {}).get("frames_per_s")
    if raw:
        rows.append(("1. raw emulator, one process (stable_retro.make, fixed buttons)",
                     f"{_n(raw)} frames/s ({_n(r['raw']['us_per_frame'])} us/frame)", "the limit", ""))
    if "actor" in r:
        sp = r["actor"]["split"]
        names = {"emulate": "emulate 4 raw frames", "preprocess": "preprocess (max, gray, resize)",
                 "infer": "infer (Nature CNN, batch 1, 1 thread, + sampling)",
                 "other": "frame stack and bookkeeping", "encode": "encode_rollout (per step)",
                 "send": "PUSH to PULL on loopback (per step)"}
        for k, label in names.items():
            pct = sp["percent"][k]
            rows.append((f"2. actor step: {label}", f"{_n(sp['us_per_step'][k], 1)} us", "",
                         f"{pct:.1f} %" if pct >= 1 else f"{pct:.2f} %"))
        ratio = f"{d['actor_ceiling_over_raw']:.2f} of raw" if "actor_ceiling_over_raw" in d else ""
        rows.append(("2. actor step: total, and the frames/s it allows", f"{_n(sp['total_us_per_step'])} us = "
                     f"{_n(sp['ceiling_frames_per_s'])} frames/s", "", ratio))
        rows.append(("2. cross-check: make_env step minus 4 raw frames", f"{_n(sp['wrappers_us_per_step'])} us", "", ""))
    if "actor_efficiency_no_train" in d:
        w = r["scaling"]["windows"]["1"]
        rows.append(("3. one actor into the learner without its gradient step",
                     f"{_n(w['frames_per_s'])} frames/s", "efficiency >= 0.8",
                     f"efficiency {d['actor_efficiency_no_train']:.2f}: "
                     + ("meets" if d["actor_efficiency_no_train"] >= TARGETS["actor_efficiency"] else "MISSES")))
    if "actor_efficiency_training" in d:
        w = r["train_run"]["one_actor"]
        rows.append(("3. one actor into the real learner training on CPU (shares the cores)",
                     f"{_n(w['frames_per_s'])} frames/s", "", f"efficiency {d['actor_efficiency_training']:.2f}"))
        two = r["train_run"]["two_actors"]
        rows.append(("3. two actors into the real learner training on CPU, total",
                     f"{_n(two['frames_per_s'])} frames/s", "",
                     f"{two['updates']} updates in {two['seconds']:.1f} s"))
    for n, s in d.get("scaling", {}).items():
        rows.append((f"4. {n} actor(s), total, learner without gradient step", f"{_n(s['frames_per_s'])} frames/s",
                     "", f"speedup {s['speedup']:.2f}, {s['efficiency_per_actor']:.2f} per actor core"))
    if "ingest" in r:
        fps = r["ingest"]["frames_per_s"]
        rows.append(("5. learner ingest (its receive task + collate, real lz4 rollouts, "
                     f"{r['ingest']['senders']} senders)", f"{_n(fps)} frames/s", ">= 200,000",
                     _verdict(fps, TARGETS["ingest_fps"], True)))
        ing = r["ingest"]
        rows.append(("5. same without sockets: Learner.accept a message; collate a rollout (frames copied once; the trainer gathers stacks)",
                     f"{_n(ing['accept_us_per_message'])} us; {_n(ing['collate_us_per_rollout'])} us", "",
                     f"ceiling {_n(ing['no_socket_ceiling_frames_per_s'])} frames/s"))
    if "actor" in r:
        wire = r["actor"]["wire"]
        naive = wire["naive_stack_bytes_per_step"]
        for codec, b in wire["bytes_per_step"].items():
            target = "<= 2,048 B" if codec == "lz4" else ""
            verdict = _verdict(b, TARGETS["bytes_per_step"], False) if codec == "lz4" else ""
            rows.append((f"6. bytes on the wire per agent step, frames {codec}", f"{_n(b)} B", target,
                         f"{verdict}{'; ' if verdict else ''}{b / naive:.3f} of a naive 4-frame stack"))
        rows.append(("6. naive stack of 4 frames per step (reference)", f"{_n(naive)} B", "", "1.000"))
    if "weights" in r:
        w = r["weights"]
        rows.append((f"7. weights publish to loaded in all {w['subscribers']} subscribers (median of max, "
                     f"{w['reps']} reps)", f"{w['median_ms']:.1f} ms", "<= 50 ms",
                     _verdict(w["median_ms"], TARGETS["weights_ms"], False)))
        rows.append(("7. same, 90th percentile; of which encode", f"{w['p90_ms']:.1f} ms; {w['encode_ms']:.1f} ms",
                     "", f"message {_n(w['message_bytes'] / 2**20, 1)} MiB; {w['missed']} of "
                     f"{w['reps'] + w['missed']} versions missed by a subscriber"))
    if "trainer" in r:
        tr = r["trainer"]
        labels = {"cpu": "CPU, the learner's torch threads", "cpu_all_cores": "CPU, all cores", "cuda": "CUDA"}
        labels |= {k + "_bf16": v + ", --precision bf16" for k, v in labels.items()}
        for key, label in labels.items():
            if key in tr:
                rows.append((f"8. Trainer.update on {label} ({tr[key]['threads']}), batch {tr['batch']} (T=32)",
                             f"{_n(tr[key]['samples_per_s'])} samples/s", "",
                             f"{tr[key]['seconds_per_update']:.2f} s an update"))
        if "cuda" not in tr:
            rows.append(("8. Trainer.update on CUDA", "not measured: no GPU here", "", ""))
    if "learner_busy_share_estimate" in d:
        two = r["train_run"]["two_actors"]
        rows.append(("8. real learner, 2 actors: share of time updating (estimate)",
                     f"{100 * d['learner_busy_share_estimate']:.0f} %", "",
                     f"{two['updates']} updates in {two['seconds']:.1f} s; learner used "
                     f"{two['learner_cpu_cores']:.2f} cores"))
    if "train_run" in r:
        rss = r["train_run"]["rss_mib"]
        peak = max(rss["actors"])
        rows.append(("9. peak RSS of an actor (real learner, 2 actors)", f"{_n(peak)} MiB", "<= 400 MiB",
                     _verdict(peak, TARGETS["actor_rss_mib"], False)))
        rows.append(("9. peak RSS of the learner (same run)", f"{_n(rss['learner'])} MiB", "", ""))
    if "vector" in r:
        v = r["vector"]
        ratio = f"ours / theirs {d['ours_over_vector_env']:.2f}" if "ours_over_vector_env" in d else ""
        rows.append((f"10. gymnasium AsyncVectorEnv, {v['envs']} envs, Nature CNN in one process",
                     f"{_n(v['frames_per_s'])} frames/s", "", ratio))
        ours = r.get("scaling", {}).get("windows", {}).get(str(v["envs"]))
        if ours:
            rows.append((f"10. retrofleet, {v['envs']} actors (learner without gradient step)",
                         f"{_n(ours['frames_per_s'])} frames/s", "", ""))
    return rows


NOTES = """\
Notes
- Every process of an item runs alone; items run one after another. Ratios divide figures of this run.
- 3 and 4: the actors are the real `actor` command. "Learner without its gradient step" is
  learner.server.Learner itself (receive, validate, batch, collate, encode and publish new weights
  after every batch) with Trainer.update skipped, so the actor is held back by nothing but itself
  and the pipeline. The real learner's CPU training competes with the actors for the same cores
  (its torch threads: half the cores by default), so "training" figures show the whole system on
  this machine, not the actor alone.
- 5: the learner's own receive task and batcher in one process, fed by sender processes that push
  pre-encoded rollouts of the real game over loopback TCP; frames = agent steps x 4.
- 8: the share is (updates in the 2-actor window x seconds an update measured alone with the
  learner's thread count) / window.
- 9: peak = max of psutil samples (every 0.25 s) and the kernel's VmHWM, read before stopping.
- 10: N = the most actors of item 4 (the cores with --full). The vector env only steps and infers;
  ours also ships every rollout to the learner, which decodes, validates and batches it.
"""


def markdown(rep: dict[str, Any]) -> str:
    m = rep["machine"]
    lines = [f"# retrofleet performance ({rep['mode']} mode, {rep['seconds']:.0f} s)", "",
             f"Machine: {m['cores']} cores, {m['cpu_model']}; torch {m['torch']}, stable-retro "
             f"{m['stable_retro']}, Python {m['python']}; GPU: {m['gpu']}.", "",
             "| figure | value | target | ratio / verdict |", "| --- | --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} | {e} |" for a, b, c, e in table_rows(rep)]
    lines += ["", NOTES]
    if rep["errors"]:
        lines += ["Not measured", *[f"- {k}: {v}" for k, v in rep["errors"].items()], ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- machine, driver


def machine(trainer: dict[str, Any] | None) -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "torch": metadata.version("torch"), "stable_retro": metadata.version("stable-retro"),
            "gpu": (trainer or {}).get("gpu", "not checked (trainer item not run)")}


def measure(items: list[str], t: dict[str, float], out: Path, quick: bool) -> tuple[dict, dict]:
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    cores = os.cpu_count() or 1
    jobs = {
        "raw": lambda: run_part("raw", "--seconds", str(t["raw"])),
        "actor": lambda: run_part("actor", "--seconds", str(t["actor"])),
        "ingest": lambda: run_part("ingest", "--seconds", str(t["ingest"]), "--run-dir", str(out / "runs" / "ingest")),
        "weights": lambda: run_part("weights", "--count", str(int(t["weights"]))),
        "trainer": lambda: run_part("trainer", "--count", str(int(t["updates"]))),
        "train_run": lambda: train_run(out, t),
        "scaling": lambda: scaling(out, t, actor_counts(cores, quick)),
        "vector": lambda: run_part("vector", "--seconds", str(t["vector"]),
                                   "--count", str(max(actor_counts(cores, quick)))),
    }
    for item in items:
        start = time.monotonic()
        print(f"[bench] {item} ...", flush=True)
        try:
            results[item] = jobs[item]()
        except Exception as exc:  # one failed item must not lose the others
            errors[item] = f"{type(exc).__name__}: {exc}"
            print(f"[bench] {item} failed: {errors[item]}", flush=True)
        print(f"[bench] {item} done in {time.monotonic() - start:.1f} s", flush=True)
    return results, errors


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.splitlines()[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_const", dest="mode", const="quick", help="a few seconds an item")
    g.add_argument("--full", action="store_const", dest="mode", const="full", help="20-60 s an item, 600 s memory")
    p.add_argument("--out", default="bench_out/perf", help="directory for bench.json and bench.md")
    p.add_argument("--only", default=",".join(ITEMS), help=f"comma-separated subset of {','.join(ITEMS)}")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every duration (tests use < 1)")
    a = p.parse_args(argv)
    mode = a.mode or "quick"
    items = [x for x in a.only.split(",") if x]
    unknown = set(items) - set(ITEMS)
    if unknown:
        p.error(f"unknown items {sorted(unknown)}; choose from {','.join(ITEMS)}")
    t = {k: v * a.scale if k not in ("weights", "updates") else max(2, round(v * a.scale))
         for k, v in MODES[mode].items()}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    results, errors = measure(items, t, out, mode == "quick")
    report = {"mode": mode, "scale": a.scale, "durations": t, "seconds": round(time.monotonic() - start, 1),
              "machine": machine(results.get("trainer")), "results": results, "errors": errors}
    report["derived"] = derive(results)
    (out / "bench.json").write_text(json.dumps(report, indent=1))
    (out / "bench.md").write_text(markdown(report))
    print((out / "bench.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
