"""A fleet in the foreground: learner (here, on Ray, or elsewhere) plus N units placed by Ray.

`./launch.sh N --ray auto` and `python -m fleet --actors N ...` (also as a Ray job) run this. It
prints a status line every few seconds; Ctrl-C or SIGTERM (`ray job stop`) stops the units, then
the learner (which writes its final checkpoint), and leaves nothing running on any node.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet import cluster, control
from fleet import spec as fleet_spec
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
    actors: str = "auto"  # a count, or "auto": one unit per free CPU (per --num-cpus)
    num_cpus: float = 1.0
    learner: str | None = None  # tcp://HOST:PORT of a learner that already runs
    learner_on_ray: bool = False
    learner_num_cpus: float = 1.0
    curve_dir: str | None = None
    learner_flags: list[str] = field(default_factory=list)


class Stopped(Exception):
    """SIGINT or SIGTERM arrived."""


STOP = threading.Event()  # set by SIGINT/SIGTERM; checked between steps, never raised inside Ray


def _on_signal(signum: int, frame: Any) -> None:
    STOP.set()


def _check_stop() -> None:
    if STOP.is_set():
        raise Stopped


def _unit_count(opts: UpOptions) -> int:
    if opts.actors != "auto":
        return int(opts.actors)
    free = cluster.free_cpus() - (opts.learner_num_cpus if opts.learner_on_ray else 0.0)
    n = int(free // opts.num_cpus)
    if n < 1:
        raise FleetError(f"--actors auto: no free CPU left on the cluster for a unit of {opts.num_cpus:g} CPUs")
    return n


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
    line = f"units up {len(up)}/{want} ({nodes or 'none yet'}), restarts {restarts}"
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
    n = _unit_count(opts)
    spec = FleetSpec(opts.name, learner=opts.learner or "", python=python, num_cpus=opts.num_cpus,
                     driver_ip=node_ip, learner_on_ray=opts.learner_on_ray, actors=n)
    curve = _curve(opts, spec, n)
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
        control.scale(opts.name, n)
        say(f"{n} unit(s) of {opts.num_cpus:g} CPU asked of Ray, joining {spec.learner}")
        code = _watch(opts.name, local, learner_unit, t0)
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


def _watch(name: str, local: LearnerProcess | None, learner_unit: Any, t0: float) -> int:
    """Status lines until the learner ends, the fleet is stopped elsewhere, or a signal."""
    import ray

    placed = False
    while True:
        spec = fleet_spec.get(name)
        if spec is None:
            say("the fleet was stopped (`fleet stop`)")
            return 0
        learner_line, ended = "", None
        if local is not None:
            learner_line, ended = local.status_line, local.child.poll()
        elif learner_unit is not None:
            try:
                info = ray.get(learner_unit.status.remote(), timeout=10)
                learner_line, ended = info["line"], info["exit_code"]
            except ray.exceptions.RayError:
                learner_line = "learner: restarting"
        if ended is not None:
            say(f"learner exited with code {ended}")
            return int(ended)
        line, rows = _status_line(name, spec.actors, learner_line)
        if not placed and len(rows) >= spec.actors and all(r.child_pid for r in rows):
            placed = True
            say(f"all {spec.actors} units running {time.monotonic() - t0:.1f} s after start")
        say(line)
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
    p.add_argument("--actors", default="auto", help="units to run, or auto: one per free CPU (default: auto)")
    p.add_argument("--num-cpus", type=float, default=1.0,
                   help="Ray CPUs per unit (default 1; 0.5 oversubscribes two units a core)")
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
    return UpOptions(name=args.name, ray=args.ray, node_ip_address=args.node_ip_address, actors=args.actors,
                     num_cpus=args.num_cpus, learner=args.learner, learner_on_ray=args.learner_on_ray,
                     learner_num_cpus=args.learner_num_cpus, curve_dir=args.curve_dir, learner_flags=flags)
