"""Chaos benchmark (issue 20): a real training run under a seeded schedule of faults, beside an
undisturbed run of the same settings; writes OUT/chaos.json.

    python -m benchmarks.chaos --minutes 10 --env CartPole-v1 --out bench_out/chaos
    python -m benchmarks.chaos --minutes 3 --env CartPole-v1 --out /tmp/c --faults kill_learner,full_disk

Each run is a learner, an actor host of --emulators, --actors one-process actors and one more
one-process actor on a second "host" (a network namespace joined by a veth pair in the chaos
run). Both runs go at the same time, so they share the machine's cores and load alike; on 2 cores
that halves both, and the comparison at equal frames stays fair. Needs root (the partition's
namespace, the full disk's tmpfs). Faults (--faults, default all), one at a time, at random
gaps after the previous one healed, in seeded cycles that each hold every kind once (the first
cycle completes even past --minutes):

  kill_emulator   SIGKILL one emulator of the actor host (the host starts it again)
  kill_host       SIGKILL the actor host (the supervisor, this script, starts it again)
  kill_actor      SIGKILL a one-process actor (started again)
  stop_actor      SIGSTOP a one-process actor for --actor-timeout + 4 s, then SIGCONT
  kill_learner    SIGKILL the learner, start it again with --resume
  partition       the second host's link down for --partition-s, then up
  hello_flood     50 sockets sending hellos for 5 s
  forged          a burst of 50 rollouts with a real actor's id and a forged token
  full_disk       the checkpoints tmpfs filled until the learner tried a checkpoint, then freed

A fault is healed ("whole") at the first two metrics rows, read after the fault's end (after
--actor-timeout + 1 s for faults that lose an actor: the learner cannot know sooner), that count
every actor with the updates advancing. chaos.json holds each fault's time and time to whole,
checkpoints lost (a resume that did not take the newest checkpoint) and unreadable (every
checkpoint loaded with weights_only=True at the end), half-written files, honest rollouts
rejected (rejections outside the floods' windows), updates skipped, every role's memory at the
start and end with its slope after --warmup, and the mean return against the undisturbed run at
equal frames. Exit code 1 when a target is missed. With --mark-every N, OUT/marks keeps each
run's newest checkpoint as its frames pass every multiple of N; `python -m
benchmarks.chaos_marks OUT` plays them (what each policy had learned by then, free of which
episodes the faults cut).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import zmq

from benchmarks.chaos_fleet import Fleet, Partition, Sampler, SmallDisk, last_row
from common import protocol
from learner import checkpoint
from testkit.equal_frames import ratio, return_at, return_curve
from testkit.floods import HelloFlood
from testkit.marks import MarkKeeper
from testkit.processes import free_base_port
from testkit.rollouts import cartpole_rollout
from testkit.run_files import read_actors, rejected_outside

FAULTS = ("kill_emulator", "kill_host", "kill_actor", "stop_actor", "kill_learner", "partition",
          "hello_flood", "forged", "full_disk")
LOSES_ACTOR = {"kill_emulator", "kill_host", "kill_actor"}
FLOODS = {"hello_flood", "forged"}
HEAL_LIMIT_S = 30.0  # the target: every fault healed within this
GIVE_UP_S = 120.0  # a fault not healed by then is recorded unhealed and the schedule goes on


@dataclass
class FaultRecord:
    kind: str
    at_s: float  # since the chaos run started
    ended_s: float  # when the fault itself ended (SIGCONT, link up, flood stopped, disk freed)
    whole_s: float | None  # from `ended_s` (a kill: from the kill) until the run was whole again
    detail: dict


class Chaos:
    def __init__(self, args: argparse.Namespace, chaos: Fleet, calm: Fleet, disk: SmallDisk | None,
                 partition: Partition | None, sampler: Sampler):
        self.args, self.fleet, self.calm = args, chaos, calm
        self.disk, self.partition, self.sampler = disk, partition, sampler
        self.rng = random.Random(args.seed)
        self.records: list[FaultRecord] = []
        self.flood_windows: list[tuple[float, float]] = []
        self.forged_sent = 0
        # forged rollouts sent but not yet counted when their fault ended: the learner reads its
        # rollout socket at its training pace, one peer in turn, so a few are counted later
        self.forged_owed: list[tuple[float, int]] = []
        self.resumes: list[dict] = []
        self.restarts: list[tuple[float, str]] = []
        self.orphans = 0

    # ------------------------------------------------------------------ waiting
    def supervise(self) -> None:
        for f in (self.fleet, self.calm):
            for role in f.restart_dead():
                self.restarts.append((self.sampler.now(), f"{f.name}/{role}"))
            if f.procs["learner"].poll() is not None and not f.killing:
                self.restarts.append((self.sampler.now(), f"{f.name}/learner (died by itself)"))
                f.start_learner(resume=True)

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.supervise()
            time.sleep(min(0.5, max(0.0, end - time.monotonic())))

    def wait_whole(self, since: float) -> float | None:
        """Seconds after `since` (sampler time) at which two rows read after it count every actor
        with the updates advancing; None after GIVE_UP_S."""
        want = self.fleet.expected_actors
        while self.sampler.now() - since < GIVE_UP_S:
            rows = self.sampler.rows_since(self.fleet.name, since)
            for (_, a), (t, b) in zip(rows, rows[1:], strict=False):
                if a.get("actors") == want and b.get("actors") == want and b["updates"] > a["updates"]:
                    return round(t - since, 1)
            self.sleep(0.5)
        return None

    # ------------------------------------------------------------------ faults
    def _kill(self, pid: int) -> None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def kill_emulator(self) -> tuple[float, dict]:
        pids = self.fleet.emulator_pids()
        if not pids:
            raise RuntimeError("the actor host has no emulator processes")
        pid = self.rng.choice(pids)
        self._kill(pid)
        return self.sampler.now(), {"pid": pid}

    def kill_host(self) -> tuple[float, dict]:
        children = self.fleet.emulator_pids()
        self._kill(self.fleet.procs["host"].pid)
        self.fleet.procs["host"].wait()
        self.fleet.start_actor("host")
        t = self.sampler.now()
        # an emulator must not outlive its host by long: count those still there after 10 s
        self.sleep(10)
        left = [p for p in children if _alive(p)]
        self.orphans += len(left)
        for p in left:
            self._kill(p)
        return t, {"emulators": len(children), "orphans_after_10s": len(left)}

    def _one_actor(self) -> str:
        return f"actor{self.rng.randrange(self.fleet.actors)}"

    def kill_actor(self) -> tuple[float, dict]:
        role = self._one_actor()
        self._kill(self.fleet.procs[role].pid)
        return self.sampler.now(), {"role": role}

    def stop_actor(self) -> tuple[float, dict]:
        role = self._one_actor()
        pid = self.fleet.procs[role].pid
        os.kill(pid, signal.SIGSTOP)
        held = self.args.actor_timeout + 4
        self.sleep(held)
        os.kill(pid, signal.SIGCONT)
        return self.sampler.now(), {"role": role, "stopped_s": held}

    def kill_learner(self) -> tuple[float, dict]:
        ckpts = self.fleet.run_dir / "checkpoints"
        newest = checkpoint.list_checkpoints(ckpts)
        offset = (self.fleet.out / "learner.log").stat().st_size
        self.fleet.killing = True
        self._kill(self.fleet.procs["learner"].pid)
        self.fleet.procs["learner"].wait()
        t = self.sampler.now()
        newest_after_kill = checkpoint.list_checkpoints(ckpts)  # a write in flight may have finished
        ready_s = self.fleet.start_learner(resume=True)
        self.fleet.killing = False
        text = self.fleet.learner_log_since(offset)
        took = next((line.split("resumed ", 1)[1].split(":")[0] for line in text.splitlines()
                     if "resumed " in line), None)
        expected = newest_after_kill[-1].name if newest_after_kill else None
        lost = expected is not None and (took is None or Path(took).name != expected)
        info = {"newest_before": newest[-1].name if newest else None, "newest_at_kill": expected,
                "resumed": Path(took).name if took else None, "lost": lost, "restart_s": round(ready_s, 1)}
        self.resumes.append(info)
        return t, info

    def partition_fault(self) -> tuple[float, dict]:
        assert self.partition is not None
        self.partition.cut()
        self.sleep(self.args.partition_s)
        self.partition.heal()
        return self.sampler.now(), {"down_s": self.args.partition_s}

    def hello_flood(self) -> tuple[float, dict]:
        start = self.sampler.now()
        flood = HelloFlood(self.fleet.port, sockets=50).start()
        self.sleep(5)
        flood.stop()
        end = self.sampler.now()
        self.flood_windows.append((start, end))
        return end, {"hellos": flood.sent}

    def forged(self) -> tuple[float, dict]:
        """50 rollouts with a real actor's id and a forged token; ends once the learner counted
        them rejected (they queue behind the honest ones) or after 60 s."""
        start = self.sampler.now()
        victim = read_actors(self.fleet.run_dir)[-1]["actor_id"]
        msg = protocol.encode_rollout(cartpole_rollout(victim), token="forged-token")
        before = last_row(self.fleet.run_dir).get("rejected_messages", 0)
        ctx = zmq.Context()
        push = ctx.socket(zmq.PUSH)
        push.connect(f"tcp://127.0.0.1:{self.fleet.port + 1}")
        sent = 0
        try:
            for _ in range(50):
                if push.poll(5000, zmq.POLLOUT):
                    push.send(msg)
                    sent += 1
            deadline = time.monotonic() + 60
            while (last_row(self.fleet.run_dir).get("rejected_messages", 0) < before + sent
                   and time.monotonic() < deadline):
                self.sleep(0.5)
        finally:
            push.close(linger=0)
            ctx.term()
        counted = last_row(self.fleet.run_dir).get("rejected_messages", 0) - before
        self.forged_sent += sent
        end = self.sampler.now()
        self.flood_windows.append((start, end))
        if counted < sent:
            self.forged_owed.append((end, sent - counted))
        return end, {"sent": sent, "counted_rejected": counted, "actor_id": victim}

    def full_disk(self) -> tuple[float, dict]:
        assert self.disk is not None
        offset = (self.fleet.out / "learner.log").stat().st_size
        filled = self.disk.fill()
        before = checkpoint.list_checkpoints(self.disk.path)
        deadline = time.monotonic() + 90
        # until the learner tried a checkpoint on the full disk (and said so in one line)
        while "not written" not in self.fleet.learner_log_since(offset) and time.monotonic() < deadline:
            self.sleep(0.5)
        said = [line for line in self.fleet.learner_log_since(offset).splitlines() if "not written" in line]
        alive = self.fleet.procs["learner"].poll() is None
        tmp_left = [p.name for p in self.disk.path.glob(".ckpt_*")]
        readable = _all_load(before)
        self.disk.free()
        return self.sampler.now(), {"filled_mb": round(filled / 2**20, 1), "learner_said": said[:1],
                                    "learner_alive": alive, "half_written_left": tmp_left,
                                    "older_checkpoints_readable": readable}

    # ------------------------------------------------------------------ schedule
    def run(self, faults: list[str], minutes: float, warmup: float) -> None:
        end = self.sampler.t0 + minutes * 60
        self.sleep(max(0.0, warmup - self.sampler.now()))
        order: list[str] = []
        cycles = 0
        while time.monotonic() < end - 20 or (cycles == 1 and order):  # the first cycle always completes
            if not order:
                cycles += 1
                order = faults[:]
                self.rng.shuffle(order)  # every kind in each cycle, in a seeded order
            kind = order.pop()
            at, wall = self.sampler.now(), time.time()
            print(f"[{at:6.0f}s] fault {kind}", flush=True)
            ended, detail = getattr(self, "partition_fault" if kind == "partition" else kind)()
            whole = self.wait_whole(ended + (self.args.actor_timeout + 1 if kind in LOSES_ACTOR else 0))
            if whole is not None and kind in LOSES_ACTOR:
                whole = round(whole + self.args.actor_timeout + 1, 1)
            if kind in LOSES_ACTOR or kind == "kill_learner":
                # the first (re)join after the fault: how much of `whole_s` a process's cold start took
                joins = [a["joined_at"] for a in read_actors(self.fleet.run_dir) if a["joined_at"] > wall]
                detail["first_join_s"] = round(min(joins) - wall, 1) if joins else None
            self.records.append(FaultRecord(kind, round(at, 1), round(ended, 1), whole, detail))
            print(f"[{self.sampler.now():6.0f}s]   whole after {whole} s  {detail}", flush=True)
            self.sleep(self.rng.uniform(self.args.min_gap, self.args.max_gap))
        self.sleep(max(0.0, end - time.monotonic()))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead
        return open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _all_load(paths: list[Path]) -> bool:
    return all(_loads(p) for p in paths)


def _loads(path: Path) -> bool:
    try:
        torch.load(path, map_location="cpu", weights_only=True)
        return True
    except Exception:
        return False


# ---------------------------------------------------------------------- report
def memory_summary(samples: list[tuple[float, dict[str, float]]], warmup: float) -> dict[str, dict]:
    """Per role: RSS (MiB) at the first and last sample, the peak, the growth after `warmup` (the
    median of the last minute's samples less the first minute's after it) and the slope (MiB
    per hour) of a least-squares line through the samples after it."""
    roles = sorted({r for _, s in samples for r in s})
    out = {}
    for role in roles:
        pts = [(t, s[role]) for t, s in samples if role in s]
        late = [(t, v) for t, v in pts if t >= warmup]
        slope = None
        if len(late) >= 3:
            ts, vs = np.array(late).T
            slope = round(float(np.polyfit(ts, vs, 1)[0]) * 3600, 1)
        out[role] = {"start_mb": round(pts[0][1], 1), "after_warmup_mb": round(late[0][1], 1) if late else None,
                     "end_mb": round(pts[-1][1], 1), "peak_mb": round(max(v for _, v in pts), 1),
                     # medians of a minute (12 samples): an update's batch tensors come and go, growth stays
                     "growth_after_warmup_mb": round(float(np.median([v for _, v in late[-12:]])
                                                           - np.median([v for _, v in late[:12]])), 1) if late else None,
                     "slope_mb_per_h": slope}
    return out


def checkpoint_audit(run_dir: Path) -> dict:
    ckpts = checkpoint.list_checkpoints(run_dir / "checkpoints")
    return {"files": [p.name for p in ckpts], "unreadable": [p.name for p in ckpts if not _loads(p)],
            "half_written": [p.name for p in (run_dir / "checkpoints").glob(".ckpt_*")]}


def report(ch: Chaos, warmup: float, exit_codes: dict[str, int | None], audits: dict[str, dict]) -> dict:
    s = ch.sampler
    chaos_rows, calm_rows = s.metrics[ch.fleet.name], s.metrics[ch.calm.name]
    last = chaos_rows[-1][1] if chaos_rows else {}
    frames = min(last.get("frames", 0), calm_rows[-1][1]["frames"] if calm_rows else 0)
    r_chaos, r_calm = return_at(chaos_rows, frames), return_at(calm_rows, frames)
    heals = [r.whole_s for r in ch.records]
    mem = {f.name: memory_summary(s.rss[f.name], warmup) for f in (ch.fleet, ch.calm)}
    peak = {n: m.get("total", {}).get("peak_mb") for n, m in mem.items()}
    lost = sum(r["lost"] for r in ch.resumes)
    unreadable = len(audits["chaos"]["unreadable"])
    half = len(audits["chaos"]["half_written"])
    disk = [r.detail for r in ch.records if r.kind == "full_disk"]
    summary = {
        "faults": len(ch.records),
        "by_kind": {k: sum(r.kind == k for r in ch.records) for k in FAULTS if any(r.kind == k for r in ch.records)},
        "healed": sum(h is not None for h in heals),
        "healed_within_30s": sum(h is not None and h <= HEAL_LIMIT_S for h in heals),
        "worst_whole_s": max((h for h in heals if h is not None), default=None),
        "checkpoints_lost": lost,
        "checkpoints_unreadable": unreadable,
        "half_written_files": half,
        "learner_exit_code": exit_codes["chaos"],
        "learner_starts": ch.fleet.learner_starts,
        "full_disk_learner_alive": all(d["learner_alive"] for d in disk),
        # at most one line a full disk (none where no checkpoint fell due while it was full)
        "full_disk_one_line": all(len(d["learner_said"]) <= 1 for d in disk),
        "full_disk_with_a_checkpoint_due": sum(len(d["learner_said"]) == 1 for d in disk),
        "honest_rejected": rejected_outside(chaos_rows, ch.flood_windows, grace=5.0, owed=ch.forged_owed),
        "forged_counted_late": sum(n for _, n in ch.forged_owed),
        "calm_rejected": calm_rows[-1][1].get("rejected_messages") if calm_rows else None,
        "forged_sent": ch.forged_sent,
        "skipped_updates": last.get("skipped_updates", 0),
        "orphaned_emulators": ch.orphans,
        "equal_frames": frames,
        "mean_return_chaos": r_chaos, "mean_return_calm": r_calm, "return_ratio": ratio(r_chaos, r_calm),
        "return_curve": return_curve(chaos_rows, calm_rows, frames),
        "peak_total_mb": peak,
        "peak_ratio": round(peak["chaos"] / peak["calm"], 3) if peak.get("chaos") and peak.get("calm") else None,
    }
    summary["ok"] = bool(
        summary["faults"] and summary["healed_within_30s"] == summary["faults"] and lost == 0
        and unreadable == 0 and half == 0 and exit_codes["chaos"] == 0 and summary["honest_rejected"] == 0
        and summary["full_disk_learner_alive"] and summary["full_disk_one_line"] and not ch.orphans
        and (not disk or summary["full_disk_with_a_checkpoint_due"] > 0))
    return {"summary": summary, "faults": [asdict(r) for r in ch.records], "resumes": ch.resumes,
            "restarts": ch.restarts, "sampler_errors": s.errors[:20], "memory": mem, "checkpoints": audits, "exit_codes": exit_codes,
            "settings": vars(ch.args) | {"out": str(ch.args.out)}}


# ---------------------------------------------------------------------- main
def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=10, help="length of both runs")
    p.add_argument("--env", default="CartPole-v1")
    p.add_argument("--out", default="", help="output directory (default: a new temporary one)")
    p.add_argument("--seed", type=int, default=1, help="seeds the fault schedule and both runs")
    p.add_argument("--faults", default=",".join(FAULTS), help="comma-separated kinds (see above)")
    p.add_argument("--emulators", type=int, default=2, help="emulators of the actor host")
    p.add_argument("--actors", type=int, default=1, help="one-process actors (besides the second host's)")
    p.add_argument("--warmup", type=float, default=60, help="seconds before the first fault and the memory baseline")
    p.add_argument("--min-gap", type=float, default=5, help="least seconds between a heal and the next fault")
    p.add_argument("--max-gap", type=float, default=30, help="most seconds between a heal and the next fault")
    p.add_argument("--partition-s", type=float, default=15, help="seconds the second host is cut off")
    p.add_argument("--actor-timeout", type=float, default=6.0)
    p.add_argument("--save-interval", type=int, default=20, help="updates between checkpoints")
    p.add_argument("--disk-mb", type=int, default=0, help="size of the checkpoints tmpfs (0: 32 for vector "
                   "games, 512 for image games)")
    p.add_argument("--calm-only", action="store_true", help="only the undisturbed run, for its memory "
                   "(OUT/memory.json); no root needed")
    p.add_argument("--limit-mb", type=float, default=50, help="--calm-only: most growth of the learner, the "
                   "host and an emulator after --warmup")
    p.add_argument("--learner-flag", action="append", default=[], help="more learner flags (repeat)")
    p.add_argument("--mark-every", type=int, default=0, help="keep each run's newest checkpoint every this "
                   "many frames in OUT/marks, to play them afterwards with benchmarks.chaos_marks (0: none)")
    args = p.parse_args(argv)
    faults = [f for f in args.faults.split(",") if f]
    if args.calm_only:
        faults = ["none"]
    unknown = [f for f in faults if f not in FAULTS and not args.calm_only]
    if unknown or not faults:
        p.error(f"--faults: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(FAULTS)}")
    if not args.calm_only and os.geteuid() != 0 and ({"partition", "full_disk"} & set(faults)):
        p.error("--faults partition and full_disk need root (a network namespace, a tmpfs mount)")
    if not args.calm_only and args.actors < 1 and {"kill_actor", "stop_actor"} & set(faults):
        p.error("--actors must be at least 1 for kill_actor and stop_actor")
    if args.mark_every < 0:
        p.error("--mark-every must be 0 (none) or a number of frames")
    if args.calm_only:
        args.faults = "none"
    args.out = Path(args.out or tempfile.mkdtemp(prefix="chaos-"))
    args.out.mkdir(parents=True, exist_ok=True)
    image = args.env.endswith("-v0") or "NoFrameskip" in args.env or args.env.startswith("ALE/")
    disk_mb = args.disk_mb or (512 if image else 32)
    flags = ["--env", args.env, "--seed", str(args.seed), "--report-interval", "1", "--quiet",
             "--eval-interval", "0", *([] if args.calm_only else ["--torch-threads", "1"]), "--save-interval", str(args.save_interval),
             "--actor-timeout", str(args.actor_timeout), *args.learner_flag]
    # SIGTERM ends the run as Ctrl-C does: the fleets stopped, the network namespace and the
    # tmpfs removed (a killed benchmark left both behind; a killed --calm-only run, its fleet)
    signal.signal(signal.SIGTERM, _interrupt)
    if args.calm_only:
        return calm_only(args, flags)
    tag = os.getpid() % 4000
    with Partition(tag) if "partition" in faults else _Null() as part:
        chaos = Fleet("chaos", args.out / "chaos", flags, free_base_port(), args.emulators, args.actors, part)
        calm = Fleet("calm", args.out / "calm", flags, free_base_port(), args.emulators, args.actors)
        chaos.out.mkdir(parents=True, exist_ok=True)
        with SmallDisk(chaos.run_dir / "checkpoints", disk_mb) if "full_disk" in faults else _Null() as disk:
            sampler = None
            try:
                calm.out.mkdir(parents=True, exist_ok=True)
                starting = [(f, f.launch_learner()) for f in (chaos, calm)]  # both at once: startup is slow under load
                for f, (since, t0) in starting:
                    f.wait_ready(since, t0)
                for f in (chaos, calm):
                    f.start_actors()
                marks = MarkKeeper(args.out / "marks", args.mark_every, [chaos.name, calm.name]) if args.mark_every else None
                sampler = Sampler([chaos, calm], time.monotonic(), marks=marks).start()  # times from both runs started
                ch = Chaos(args, chaos, calm, disk, part, sampler)
                ch.run(faults, args.minutes, args.warmup)
            finally:
                if sampler is not None:
                    sampler.stop()
                codes = {"chaos": chaos.stop(), "calm": calm.stop()}
            audits = {"chaos": checkpoint_audit(chaos.run_dir), "calm": checkpoint_audit(calm.run_dir)}
    out = report(ch, args.warmup, codes, audits)
    (args.out / "chaos.json").write_text(json.dumps(out, indent=1, default=str))
    print(json.dumps(out["summary"], indent=1))
    print(f"written {args.out / 'chaos.json'}")
    return 0 if out["summary"]["ok"] else 1


def calm_only(args: argparse.Namespace, flags: list[str]) -> int:
    """The undisturbed run alone (`./launch.sh`'s shape: a learner and an actor host, plus
    --actors one-process actors), every process's RSS logged; OUT/memory.json. Exit code 1
    when a role grew more than --limit-mb after --warmup."""
    calm = Fleet("calm", args.out / "calm", flags, free_base_port(), args.emulators, args.actors,
                 second_host=False)
    calm.out.mkdir(parents=True, exist_ok=True)
    sampler = None
    try:
        calm.start_learner()
        calm.start_actors()
        sampler = Sampler([calm], time.monotonic()).start()
        end = time.monotonic() + args.minutes * 60
        while time.monotonic() < end:
            died = calm.restart_dead()
            if died or calm.procs["learner"].poll() is not None:
                print(f"died during the run: {died or ['learner']}", flush=True)
                break
            time.sleep(1)
    finally:
        if sampler is not None:
            sampler.stop()
        code = calm.stop()
    mem = memory_summary(sampler.rss["calm"], args.warmup) if sampler else {}
    roles = [r for r in ("learner", "host", "emulator") if r in mem]
    growth = {r: mem[r]["growth_after_warmup_mb"] for r in roles}
    ok = code == 0 and all(g is not None and g <= args.limit_mb for g in growth.values())
    out = {"summary": {"growth_after_warmup_mb": growth, "limit_mb": args.limit_mb, "learner_exit_code": code,
                       "ok": ok}, "memory": mem, "settings": vars(args) | {"out": str(args.out)}}
    (args.out / "memory.json").write_text(json.dumps(out, indent=1, default=str))
    print(json.dumps(out["summary"], indent=1))
    return 0 if ok else 1


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc) -> None:
        return None


if __name__ == "__main__":
    sys.exit(main())
