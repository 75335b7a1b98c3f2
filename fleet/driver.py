"""A fleet in the foreground: learner (here, on Ray, or elsewhere) plus N actors placed by Ray
(as actor hosts of K emulators, or one-process actors: fleet.layout).

`./launch.sh N --ray auto` and `python -m fleet --actors N ...` (also as a Ray job) run this. It
prints a status line every few seconds; Ctrl-C or SIGTERM (`ray job stop`) stops the units, then
the learner (which writes its final checkpoint), and leaves nothing running on any node.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet import cluster, control, layout
from fleet import spec as fleet_spec
from fleet.autoscale import Autoscaler, Windows, last_metrics_row
from fleet.learner_proc import LearnerProcess
from fleet.spec import FleetError, FleetSpec

STATUS_EVERY_S = 5.0


def say(msg: str) -> None:
    print(f"[fleet] {msg}", flush=True)


@dataclass
class UpOptions:
    name: str = "retrofleet"
    ray: str = "auto"
    node_ip_address: str | None = None
    actors: str = "auto"  # emulators: a count, or "auto": from one per free CPU (per --num-cpus), then measured
    actor_mode: str = "auto"  # host, process, or auto: actor/mode.py's rule for the learner's game
    emulators_per_host: str = "auto"  # K or auto (see fleet.layout)
    num_cpus: float = 1.0  # per emulator
    learner: str | None = None  # tcp://HOST:PORT of a learner that already runs
    learner_on_ray: bool = False
    learner_num_cpus: float = 1.0
    curve_dir: str | None = None
    learner_flags: list[str] = field(default_factory=list)
    scale_window: float = 30.0  # --actors auto: seconds a count is measured
    scale_settle: float = 10.0  # --actors auto: seconds after a change before measuring
    max_lag: float = 5.0  # --actors auto: mean policy lag above which the learner is starved


class Stopped(Exception):
    """SIGINT or SIGTERM arrived."""


STOP = threading.Event()  # set by SIGINT/SIGTERM; checked between steps, never raised inside Ray


def _on_signal(signum: int, frame: Any) -> None:
    STOP.set()


def _check_stop() -> None:
    if STOP.is_set():
        raise Stopped


def _layout(opts: UpOptions) -> tuple[int, int]:
    """(actors, emulators per host) for this cluster."""
    if opts.actors != "auto":
        n = int(opts.actors)
    else:
        free = cluster.free_cpus() - (opts.learner_num_cpus if opts.learner_on_ray else 0.0)
        n = int(free // opts.num_cpus + 1e-9)
        if n < 1:
            raise FleetError(f"--actors auto: no free CPU left on the cluster for an emulator of "
                             f"{opts.num_cpus:g} CPUs")
    per_host = layout.parse_per_host(opts.emulators_per_host)
    if per_host is None:
        per_host = layout.auto_per_host(n, cluster.node_cpus(), opts.num_cpus)
    return n, per_host


def _actor_mode(opts: UpOptions, spec: FleetSpec, per_host: int) -> int:
    """Emulators per host, or 0 for one-process actors: as --actor-mode says or, with auto, as
    actor/mode.py's rule says for the learner's game (asked of the learner, as launch.sh does)."""
    mode = opts.actor_mode
    if mode == "auto":
        keys = []
        if spec.curve_dir:
            d = Path(spec.curve_dir)
            keys = ["--curve-secret", str(d / f"{spec.name}-unit0.key_secret"),
                    "--curve-server-key", str(d / "learner.key")]
        out = subprocess.run([spec.python, "-m", "actor.mode", "--learner", spec.learner, "--actors",
                              str(per_host), *keys], capture_output=True, text=True, timeout=120)
        mode, why = out.stdout.strip(), (out.stderr.strip().splitlines() or ["?"])[-1]
        if out.returncode != 0 or mode not in ("host", "process"):
            raise FleetError(f"could not ask the learner at {spec.learner} for its game: {why}")
        say(f"actor mode {why}")
    return per_host if mode == "host" else 0


def _describe(n: int, per_host: int, num_cpus: float) -> str:
    sizes = layout.split(n, per_host)
    if not per_host:
        return f"{n} one-process actor(s) of {num_cpus:g} CPU"
    kinds = Counter(sizes)
    hosts = " + ".join(f"{h} x {k}" for k, h in sorted(kinds.items(), reverse=True))
    return (f"{n} actors as {len(sizes)} actor host(s) ({hosts} emulators; "
            f"{layout.unit_cpus(sizes[0], num_cpus, False):g} CPUs for a host of {sizes[0]})")


def _run_dir(flags: list[str], name: str) -> tuple[list[str], str]:
    """The learner's --run-dir as an absolute path (a default one when none is given)."""
    for i, f in enumerate(flags):
        if f == "--run-dir" and i + 1 < len(flags):
            return flags[:i] + flags[i + 2:], os.path.abspath(flags[i + 1])
        if f.startswith("--run-dir="):
            return flags[:i] + flags[i + 1:], os.path.abspath(f.split("=", 1)[1])
    return flags, os.path.abspath(f"runs/fleet-{name}-{time.strftime('%Y%m%d-%H%M%S')}")


def _curve(opts: UpOptions, spec: FleetSpec, units: int) -> dict[str, Any] | None:
    """With --curve-dir: the learner's public key into the spec and a key pair for each of the
    first `units` units (the learner needs admitted keys when it starts); for a learner on Ray,
    also what it needs on its node: its key pair and the admitted public keys."""
    if not opts.curve_dir:
        return None
    from common.transport import TransportError, read_key

    d = Path(opts.curve_dir).resolve()
    name = "learner.key" if opts.learner else "learner.key_secret"
    try:
        public, secret = read_key(d / name, need_secret=not opts.learner)
    except TransportError as exc:
        raise FleetError(f"{exc} (make keys with `learner keygen {d}`)") from None
    spec.curve_server_key, spec.curve_dir = public.decode(), str(d)
    for i in range(units):
        control.unit_keys(spec, i)
    if not opts.learner_on_ray:
        return None
    assert secret is not None
    admitted = {p.stem: read_key(p)[0].decode() for p in sorted((d / "authorized").glob("*.key"))}
    return {"public": public.decode(), "secret": secret.decode(), "authorized": admitted}


def _status_line(name: str, want: int, learner_line: str) -> tuple[str, list[control.UnitRow]]:
    rows = control.status(name, timeout=3.0)
    up = [r for r in rows if r.child_pid]  # the unit answered and its program runs
    per_node = Counter(r.node_ip for r in up)
    nodes = ", ".join(f"{ip}: {k}" for ip, k in sorted(per_node.items()))
    restarts = sum(r.restarts or 0 for r in rows)
    actors = sum(len(r.actor_ids) for r in up)
    line = f"units up {len(up)}/{want} ({nodes or 'none yet'}), {actors} actor ids, restarts {restarts}"
    return (f"{line} | {learner_line}" if learner_line else line), rows


def run(opts: UpOptions) -> int:
    t0 = time.monotonic()
    node_ip = cluster.connect(opts.ray, node_ip=opts.node_ip_address, namespace=opts.name)
    python = sys.executable
    reports = cluster.check_cluster(python)
    say(f"Ray cluster: {len(reports)} node(s) ({', '.join(r.ip for r in reports)}), Python "
        f"{reports[0].python}, Ray {reports[0].ray}, {cluster.free_cpus():g} free CPUs; units run {python}")
    if fleet_spec.get(opts.name) is not None or control.unit_handles(opts.name):
        raise FleetError(f"a fleet named {opts.name!r} already runs on this cluster (`fleet status`, "
                         "`fleet stop`, or --name another)")
    n, per_host = _layout(opts)
    spec = FleetSpec(opts.name, learner=opts.learner or "", python=python, num_cpus=opts.num_cpus,
                     driver_ip=node_ip, learner_on_ray=opts.learner_on_ray, actors=0,
                     emulators_per_host=per_host)
    curve = _curve(opts, spec, len(layout.split(n, per_host)))
    fleet_spec.put(spec)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    local: LearnerProcess | None = None
    learner_unit = None
    code = 0
    try:
        if opts.learner_on_ray:
            flags, run_dir = _run_dir(opts.learner_flags, opts.name)
            gpus = 1.0 if cluster.cluster_gpus() >= 1 else 0.0
            learner_unit = control.start_learner_on_ray(spec, flags, run_dir, os.getcwd(), curve,
                                                        opts.learner_num_cpus, gpus, stop=STOP)
            import ray

            info = ray.get(learner_unit.status.remote())
            say(f"learner on Ray at {info['address']} (node {info['node_ip']}, "
                f"{'a GPU' if gpus else 'no GPU in the cluster'}); run directory {info['run_dir']} there")
        elif not opts.learner:
            local = LearnerProcess(python, node_ip, opts.learner_flags, curve_dir=spec.curve_dir)
            spec.learner = local.wait_ready(stop=STOP)
            fleet_spec.put(spec)
            say(f"learner ready at {spec.learner}; run directory {local.run_dir}")
        _check_stop()
        spec = fleet_spec.require(opts.name)
        per_host = _actor_mode(opts, spec, per_host)
        spec.emulators_per_host = per_host
        fleet_spec.put(spec)
        control.scale(opts.name, n)
        say(f"{_describe(n, per_host, opts.num_cpus)} asked of Ray, joining {spec.learner}")
        scaling = None
        if opts.actors == "auto":
            if local is None and learner_unit is None:
                say(f"--actors auto with --learner elsewhere: the count stays at {n} (the learner's "
                    "metrics are not readable from here)")
            else:
                # from the free CPUs down (never more than fit): fewer while the learner is starved,
                # and fewer than fit only where that measured more frames/s (fleet.autoscale)
                scaling = _Scaling(Autoscaler(minimum=1, maximum=n, max_lag_mean=opts.max_lag, cores=n),
                                   Windows(opts.scale_settle, opts.scale_window, time.monotonic()),
                                   local.run_dir if local is not None else None, t0)
                say(f"--actors auto: starting from the free CPUs ({n}); the count follows the learner's "
                    f"frames/s, measured every {opts.scale_window:g} s (fleet.autoscale)")
        code = _watch(opts.name, local, learner_unit, t0, scaling)
    except (Stopped, FleetError) as exc:
        if isinstance(exc, FleetError) and not STOP.is_set():
            raise
        say("stopping: units first, then the learner (final checkpoint)...")
        code = 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _shutdown(opts.name, local)
    return code


@dataclass
class _Scaling:
    """--actors auto: the hill climb (fleet.autoscale) on the learner's metrics while it trains."""

    scaler: Autoscaler
    windows: Windows
    run_dir: Path | None  # a learner started here records its changes in RUN_DIR/autoscale.jsonl
    t0: float

    def step(self, name: str, count: int, row: dict[str, Any] | None, acting: bool) -> None:
        now = time.monotonic()
        w = self.windows.next(now, row, count, acting)
        if w is None:
            return
        d = self.scaler.decide(w)
        entry = {"wall_s": round(now - self.t0, 1), "from": count, "to": d.count, "reason": d.reason,
                 "frames_per_s": round(w.frames_per_s, 1), "policy_lag_mean": w.policy_lag_mean,
                 "dropped_stale": w.dropped_stale, "window_s": round(w.seconds, 1)}
        if self.run_dir is not None:
            with open(self.run_dir / "autoscale.jsonl", "a") as fh:
                fh.write(json.dumps(entry) + "\n")
        change = f"{count} -> {d.count} actors" if d.count != count else f"{count} actors"
        say(f"autoscale: {change}: {d.reason}")
        if d.count != count:
            control.scale(name, d.count)
            self.windows.changed(time.monotonic())


def _watch(name: str, local: LearnerProcess | None, learner_unit: Any, t0: float,
           scaling: _Scaling | None = None) -> int:
    """Status lines until the learner ends, the fleet is stopped elsewhere, or a signal; with
    `scaling`, the actor count follows the measurements."""
    import ray

    placed = False
    while True:
        spec = fleet_spec.get(name)
        if spec is None:
            say("the fleet was stopped (`fleet stop`)")
            return 0
        learner_line, ended, row = "", None, None
        if local is not None:
            learner_line, ended = local.status_line, local.child.poll()
            if scaling is not None and local.run_dir is not None:
                row = last_metrics_row(local.run_dir)
        elif learner_unit is not None:
            try:
                info = ray.get(learner_unit.status.remote(), timeout=10)
                learner_line, ended, row = info["line"], info["exit_code"], info.get("metrics")
            except ray.exceptions.RayError:
                learner_line = "learner: restarting"
        if ended is not None:
            say(f"learner exited with code {ended}")
            return int(ended)
        units = len(layout.split(spec.actors, spec.emulators_per_host))
        line, rows = _status_line(name, units, learner_line)
        running = len(rows) >= units and all(r.child_pid for r in rows)
        if not placed and running:
            placed = True
            say(f"all {units} units running {time.monotonic() - t0:.1f} s after start")
        say(line)
        if scaling is not None:
            if not running:
                scaling.windows.changed(time.monotonic())  # a unit restarting disturbs the window
            scaling.step(name, spec.actors, row, running)
        if STOP.wait(STATUS_EVERY_S):
            raise Stopped


def _shutdown(name: str, local: LearnerProcess | None) -> None:
    try:
        n, on_ray = control.stop(name)
        say(f"stopped {n} unit(s){' and the learner on Ray' if on_ray else ''}")
    except Exception as exc:  # still stop the local learner
        say(f"stopping the units failed: {exc}")
    if local is not None:
        rc = local.stop()
        say(f"learner stopped (code {rc}); run directory {local.run_dir}")


def add_up_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--actors", default="auto",
                   help="actors (emulators) to run, or auto: start from one per free CPU, then keep the "
                   "count that gives the learner the most frames/s without starving it (default: auto)")
    p.add_argument("--scale-window", type=float, default=30.0, metavar="S",
                   help="--actors auto: seconds each count is measured (default: %(default)s)")
    p.add_argument("--scale-settle", type=float, default=10.0, metavar="S",
                   help="--actors auto: seconds after a change before measuring (default: %(default)s)")
    p.add_argument("--max-lag", type=float, default=5.0,
                   help="--actors auto: mean policy lag (versions) above which the learner counts as "
                   "starved (default: %(default)s)")
    p.add_argument("--actor-mode", default="auto",
                   help="host: each unit Ray places is an actor host (K emulators, one batched "
                   "policy); process: each actor a unit of its own (one process); auto (default): "
                   "as launch.sh picks for the learner's game (actor/mode.py)")
    p.add_argument("--emulators-per-host", default="auto", metavar="K",
                   help="emulators in each actor host; auto (default): the actors spread evenly over "
                   "the nodes, one host a node where it fits")
    p.add_argument("--num-cpus", type=float, default=1.0,
                   help="Ray CPUs per emulator (default 1; 0.5 oversubscribes two a core); a host of K "
                   "asks for K times this, rounded up to whole CPUs above 1")
    p.add_argument("--learner", help="tcp://HOST:PORT of a learner that runs already (else one starts here)")
    p.add_argument("--learner-on-ray", action="store_true",
                   help="start the learner as a Ray actor too, on a node with a GPU when the cluster has one")
    p.add_argument("--learner-num-cpus", type=float, default=1.0, help="Ray CPUs for --learner-on-ray")
    p.add_argument("--curve-dir", help="CURVE keys (learner keygen DIR): each unit gets a key pair of its own")
    p.add_argument("learner_flags", nargs=argparse.REMAINDER,
                   help="after --: flags for the learner (e.g. -- --env CartPole-v1 --port 5555)")


def options(args: argparse.Namespace) -> UpOptions:
    flags = list(args.learner_flags)
    if flags and flags[0] == "--":
        flags = flags[1:]
    if args.actors != "auto" and not args.actors.isdigit():
        raise FleetError(f"--actors takes a count or auto, got {args.actors!r}")
    for flag, cpus in (("--num-cpus", args.num_cpus), ("--learner-num-cpus", args.learner_num_cpus)):
        if cpus <= 0 or (cpus > 1 and cpus != int(cpus)):  # Ray's rule for resource amounts
            raise FleetError(f"{flag} must be a fraction up to 1 or a whole number, got {cpus:g}")
    if args.learner and args.learner_on_ray:
        raise FleetError("--learner (a learner elsewhere) and --learner-on-ray exclude each other")
    if args.learner and flags:
        raise FleetError(f"learner flags ({' '.join(flags)}) belong on the learner's host with --learner")
    if args.learner:
        from common.transport import TransportError, parse_address

        try:
            parse_address(args.learner)
        except TransportError as exc:
            raise FleetError(str(exc)) from None
    layout.parse_per_host(args.emulators_per_host)
    if args.scale_window <= 0 or args.scale_settle < 0 or args.max_lag <= 0:
        raise FleetError(f"--scale-window and --max-lag must be > 0 and --scale-settle >= 0, got "
                         f"{args.scale_window:g}, {args.max_lag:g}, {args.scale_settle:g}")
    if args.actor_mode not in ("auto", "host", "process"):
        raise FleetError(f"--actor-mode takes auto, host or process, got {args.actor_mode!r}")
    return UpOptions(name=args.name, ray=args.ray, node_ip_address=args.node_ip_address, actors=args.actors,
                     actor_mode=args.actor_mode, emulators_per_host=args.emulators_per_host, num_cpus=args.num_cpus, learner=args.learner, learner_on_ray=args.learner_on_ray,
                     learner_num_cpus=args.learner_num_cpus, curve_dir=args.curve_dir, learner_flags=flags,
                     scale_window=args.scale_window, scale_settle=args.scale_settle, max_lag=args.max_lag)
