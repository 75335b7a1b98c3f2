"""How a fleet's actors become the units Ray places: actor hosts of K emulators each.

`--actors N` counts emulators (each one actor id to the learner), as everywhere in retrofleet.
With `--actor-mode host` they are split into hosts of `--emulators-per-host K` (the last one
takes the rest); a host asks Ray for K x `--num-cpus` CPUs. `auto` sizes hosts so that the
actors spread evenly over the nodes, one host a node where it fits (the actor host's point: one
inference process per machine, batching its emulators). With `--actor-mode process` (K = 0
here) each actor is a unit of its own, a lone `actor` process.
"""

from __future__ import annotations

import math

from fleet.spec import FleetError


def split(actors: int, per_host: int) -> list[int]:
    """Emulators of each unit, in unit order: hosts of `per_host`, the last one the rest;
    one-process actors (`per_host` 0) are units of 1."""
    if actors < 0:
        raise FleetError(f"cannot run {actors} actors")
    if per_host <= 0:
        return [1] * actors
    full, rest = divmod(actors, per_host)
    return [per_host] * full + ([rest] if rest else [])


def unit_cpus(emulators: int, per_emulator: float, one_process: bool) -> float:
    """Ray CPUs one unit asks for. Ray takes fractions only up to 1, so a host's share above 1
    is rounded up to whole CPUs (3 emulators x 0.5 asks for 2)."""
    if one_process:
        return per_emulator
    cpus = emulators * per_emulator
    return cpus if cpus <= 1 else float(math.ceil(round(cpus, 6)))


def auto_per_host(actors: int, node_cpus: list[float], per_emulator: float) -> int:
    """`--emulators-per-host auto`: the actors spread evenly over the nodes (one host each),
    but no host bigger than the smallest node holds."""
    if not node_cpus:
        raise FleetError("the Ray cluster has no alive node with CPUs")
    fits = int(min(node_cpus) // per_emulator + 1e-9)
    if fits < 1:
        raise FleetError(f"no node has {per_emulator:g} CPUs for one emulator (--num-cpus)")
    k = max(1, min(fits, math.ceil(actors / len(node_cpus))))
    if k * per_emulator > 1:  # whole CPUs a host, none asked for that its emulators do not use
        k = max(1, int(math.floor(k * per_emulator + 1e-9) / per_emulator + 1e-9))
    return k


def parse_per_host(text: str) -> int | None:
    """`--emulators-per-host`: a count from 1, or auto (None)."""
    if text == "auto":
        return None
    if not text.isdigit() or int(text) < 1:
        raise FleetError(f"--emulators-per-host takes a count from 1 or auto, got {text!r}")
    return int(text)
