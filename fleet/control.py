"""Fleet operations on a Ray cluster: start units, scale, status, stop.

Units are named detached Ray actors `unit-<i>` in a Ray namespace named after the fleet, so any
driver (`fleet status` in another shell, on another node) finds them; Ray places them (SPREAD),
restarts them (max_restarts=-1) and reports where they run and how often they restarted. This
module only asks Ray; it keeps no state of its own beyond the fleet's spec in Ray's KV store.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from fleet import layout
from fleet import spec as fleet_spec
from fleet.spec import FleetError, FleetSpec
from fleet.units import ActorUnit, LearnerUnit

UNIT_PREFIX = "unit-"
LEARNER_NAME = "learner"
STOP_TIMEOUT_S = 15.0


def _ray():
    import ray

    return ray


def unit_handles(name: str) -> dict[int, Any]:
    """index -> handle of every unit of fleet `name` that Ray has not buried."""
    ray = _ray()
    out = {}
    for entry in ray.util.list_named_actors(all_namespaces=True):
        n = entry["name"]
        if entry["namespace"] == name and n.startswith(UNIT_PREFIX) and n[len(UNIT_PREFIX):].isdigit():
            try:
                out[int(n[len(UNIT_PREFIX):])] = ray.get_actor(n, namespace=name)
            except ValueError:  # it died between the listing and the lookup
                continue
    return out


def learner_handle(name: str) -> Any | None:
    ray = _ray()
    try:
        return ray.get_actor(LEARNER_NAME, namespace=name)
    except ValueError:
        return None


def _runtime_env(spec: FleetSpec) -> dict[str, Any]:
    # the driver's venv python runs each unit; cluster.check_cluster made sure it is on every node
    return {"py_executable": spec.python}


def unit_keys(spec: FleetSpec, index: int) -> tuple[str, str] | None:
    """This unit's own CURVE key pair (made in the fleet's --curve-dir on first use)."""
    if not spec.curve_server_key:
        return None
    from common.transport import TransportError, named_pair

    if not spec.curve_dir:
        raise FleetError("the learner requires CURVE: give the fleet --curve-dir")
    try:
        keys = named_pair(spec.curve_dir, f"{spec.name}-unit{index}")
    except (TransportError, OSError) as exc:
        raise FleetError(f"{exc} (CURVE keys for this fleet are made in {spec.curve_dir} on "
                         f"{spec.driver_ip}: scale it from there)") from None
    public, secret = keys.public.decode(), keys.secret.decode()
    learner = learner_handle(spec.name)
    if learner is not None:
        _ray().get(learner.authorize.remote(f"{spec.name}-unit{index}", public), timeout=60)
    return public, secret


def start_units(spec: FleetSpec, units: dict[int, int]) -> dict[int, Any]:
    """Start unit i with units[i] emulators (a host; 1 for a one-process actor)."""
    ray = _ray()
    remote = ray.remote(ActorUnit)
    handles = {}
    for i, emulators in units.items():
        handles[i] = remote.options(
            name=f"{UNIT_PREFIX}{i}", namespace=spec.name, lifetime="detached",
            num_cpus=layout.unit_cpus(emulators, spec.num_cpus, spec.unit == "actor"),
            max_restarts=-1, max_task_retries=0, scheduling_strategy="SPREAD",
            runtime_env=_runtime_env(spec),
        ).remote(spec.name, i, emulators, unit_keys(spec, i))
    return handles


def stop_handles(handles: list[Any], timeout: float = STOP_TIMEOUT_S) -> None:
    """Each program stops cleanly (SIGTERM), then Ray kills its actor for good."""
    ray = _ray()
    refs = [h.stop.remote() for h in handles]
    if refs:
        ray.wait(refs, num_returns=len(refs), timeout=timeout)
    for h in handles:
        try:
            ray.kill(h, no_restart=True)  # a unit already gone is no error to Ray
        except Exception as exc:  # Ray raises its own and builtin types here: say which, go on with the rest
            print(f"fleet: warning: could not kill a unit: {type(exc).__name__}: {exc}", file=sys.stderr)


def wait_gone(name: str, indices: set[int] | None = None, timeout: float = 30.0) -> None:
    """Until Ray lists none of these units (all of the fleet's when `indices` is None)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = set(unit_handles(name))
        if not (left if indices is None else left & indices):
            return
        time.sleep(0.2)
    raise FleetError(f"units of fleet {name!r} still listed by Ray after {timeout:.0f} s")


def scale(name: str, actors: int) -> tuple[list[int], list[int]]:
    """Run exactly `actors` emulators: the units layout.split gives, 0..H-1. Units beyond go; a
    unit whose size changes (the last, partly filled host) is replaced; returns (started,
    stopped) unit indices."""
    spec = fleet_spec.require(name)
    want = dict(enumerate(layout.split(actors, spec.emulators_per_host)))
    had = dict(enumerate(layout.split(spec.actors, spec.emulators_per_host)))
    handles = unit_handles(name)
    going = sorted(i for i in handles if want.get(i) != had.get(i))
    coming = {i: k for i, k in want.items() if i not in handles or i in going}
    stop_handles([handles[i] for i in going])
    if going:
        wait_gone(name, set(going))
    start_units(spec, coming)
    spec = fleet_spec.require(name)
    spec.actors = actors
    fleet_spec.put(spec)
    return sorted(coming), going


@dataclass
class UnitRow:
    index: int
    state: str
    node_ip: str = ""
    pid: int | None = None  # the Ray actor's worker process
    child_pid: int | None = None  # the actor host (or one-process actor) process
    emulators: int = 0  # emulators the unit runs (1 for a one-process actor)
    emulator_pids: list[int] = field(default_factory=list)  # a host's emulator processes
    actor_ids: list[int] = field(default_factory=list)  # the learner's ids, one per emulator
    restarts: int | None = None
    ray_actor_id: str = ""


def status(name: str, timeout: float = 10.0) -> list[UnitRow]:
    """Where each unit runs: node, pids, its emulators' actor ids, restarts (Ray's count)."""
    ray = _ray()
    handles = unit_handles(name)
    nodes = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}
    states = _actor_states(name)
    refs = {i: h.info.remote() for i, h in handles.items()}
    ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout) if refs else ([], [])
    rows = []
    for i in sorted(handles):
        st = states.get(f"{UNIT_PREFIX}{i}")
        row = UnitRow(i, st.state if st else "?", nodes.get(st.node_id, "") if st else "",
                      restarts=st.num_restarts if st else None, ray_actor_id=st.actor_id if st else "",
                      pid=st.pid if st else None)
        if refs[i] in ready:
            try:
                info = ray.get(refs[i])
                row.node_ip, row.pid, row.actor_ids = info["node_ip"], info["pid"], info["actor_ids"]
                row.emulators, row.emulator_pids = info["emulators"], info["emulator_pids"]
                row.child_pid = info["child_pid"] if info["child_alive"] else None
            except ray.exceptions.RayError:
                pass
        rows.append(row)
    return rows


def _actor_states(name: str) -> dict[str, Any]:
    """Ray's record of each live named actor of the fleet (state API: needs Ray's dashboard)."""
    from ray.util.state import list_actors

    try:
        states = list_actors(filters=[("ray_namespace", "=", name)], detail=True, limit=10_000,
                             raise_on_missing_output=False)
    except Exception as exc:  # no dashboard on this cluster: show what the units say
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        print(f"fleet: warning: Ray's state API did not answer ({why}); restarts unknown", file=sys.stderr)
        return {}
    return {s.name: s for s in states if s.state != "DEAD" and s.name}


def start_learner_on_ray(spec: FleetSpec, flags: list[str], run_dir: str, cwd: str,
                         curve: dict[str, Any] | None, num_cpus: float, num_gpus: float,
                         timeout: float = 300, stop: threading.Event | None = None) -> Any:
    """The learner as a named detached Ray actor, once it is ready (FleetError if it is not)."""
    ray = _ray()
    handle = ray.remote(LearnerUnit).options(
        name=LEARNER_NAME, namespace=spec.name, lifetime="detached", num_cpus=num_cpus,
        num_gpus=num_gpus, max_restarts=-1, max_task_retries=0, runtime_env=_runtime_env(spec),
    ).remote(spec.name, flags, run_dir, cwd, curve)
    ref = handle.status.remote()
    deadline = time.monotonic() + timeout
    try:
        while not ray.wait([ref], timeout=1.0)[0]:
            if stop is not None and stop.is_set():
                raise FleetError("stopped before the learner was ready")
            if time.monotonic() > deadline:
                raise FleetError(f"the learner was not placed and ready within {timeout:.0f} s (is there "
                                 f"a node with {num_cpus:g} free CPUs{' and a GPU' if num_gpus else ''}?)")
        ray.get(ref)
    except ray.exceptions.RayError as exc:
        ray.kill(handle, no_restart=True)
        raise FleetError(f"the learner did not start on Ray: {_first_line(exc)}") from None
    except FleetError:
        ray.kill(handle, no_restart=True)
        raise
    return handle


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    for line in reversed(text.splitlines()):  # Ray wraps the cause; its last line says it
        if "FleetError" in line or "Error" in line:
            return line.strip()
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def stop(name: str) -> tuple[int, bool]:
    """End every unit and the learner on Ray, then forget the fleet; (units stopped, learner)."""
    ray = _ray()
    fleet_spec.delete(name)  # first: a unit Ray restarts meanwhile finds no fleet and stays down
    handles = unit_handles(name)
    stop_handles(list(handles.values()))
    learner = learner_handle(name)
    if learner is not None:
        try:
            ray.get(learner.stop.remote(), timeout=60)
        except ray.exceptions.RayError:
            pass
        ray.kill(learner, no_restart=True)
    wait_gone(name)
    return len(handles), learner is not None
