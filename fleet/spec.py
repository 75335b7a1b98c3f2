"""What a fleet's units need to know, kept in Ray's key-value store (the GCS) under the fleet's name.

The driver writes it once the learner is up; every unit reads it when Ray starts (or restarts)
it, so the learner's address reaches the actors without anyone typing it, and a unit restarted
after the learner moved finds the new address. `fleet scale` reads it to make new units alike.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

KV_NAMESPACE = "retrofleet"


class FleetError(RuntimeError):
    """A fleet operation that cannot go on, worded as one line for the user."""


@dataclass
class FleetSpec:
    name: str
    learner: str  # tcp://HOST:PORT, the learner's control address
    python: str  # the driver's venv python: every unit runs it (and checks it exists on its node)
    actors: int = 0  # emulators (actor ids) wanted: what `fleet scale` last asked for
    emulators_per_host: int = 0  # K: each unit an actor host of K emulators; 0: one-process actors
    num_cpus: float = 1.0  # Ray CPUs per emulator (a host of K asks for K times this)
    curve_server_key: str | None = None  # the learner's CURVE public key (z85) when CURVE is on
    curve_dir: str | None = None  # where unit key pairs are made (on the driver's machine)
    driver_ip: str = ""  # the node the driver (and a local learner) runs on
    learner_on_ray: bool = False
    env: dict[str, str] = field(default_factory=dict)  # extra environment for units' processes

    @property
    def unit(self) -> str:
        """What one Ray actor runs: "host" (an actor host) or "actor" (a one-process actor)."""
        return "host" if self.emulators_per_host else "actor"

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> FleetSpec:
        return cls(**json.loads(raw))


def _key(name: str) -> bytes:
    return f"fleet/{name}/spec".encode()


def put(spec: FleetSpec) -> None:
    from ray.experimental import internal_kv

    internal_kv._internal_kv_put(_key(spec.name), spec.to_json(), overwrite=True, namespace=KV_NAMESPACE)


def get(name: str) -> FleetSpec | None:
    """The fleet's spec, or None when no fleet of that name runs on this cluster."""
    from ray.experimental import internal_kv

    raw = internal_kv._internal_kv_get(_key(name), namespace=KV_NAMESPACE)
    return FleetSpec.from_json(raw) if raw else None


def require(name: str) -> FleetSpec:
    spec = get(name)
    if spec is None:
        raise FleetError(f"no fleet named {name!r} runs on this Ray cluster (start one with "
                         f"`./launch.sh N --ray auto` or `python -m fleet --actors N ...`)")
    return spec


def delete(name: str) -> None:
    from ray.experimental import internal_kv

    internal_kv._internal_kv_del(_key(name), namespace=KV_NAMESPACE)
