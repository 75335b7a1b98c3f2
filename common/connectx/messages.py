"""The two-player wing's messages: the league and snapshots (learner -> actors, on the weights
socket) and the fields a game's end adds to an episode (opponent, seat, result).

Importing this module registers them with the generic wire layer (common/protocol.py), which
names no two-player concept itself.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from common import protocol
from common.protocol import ProtocolError, encode, finite_float, one_of, pack_array, unpack_params

LEAGUE, SNAPSHOT = "league", "snapshot"
KINDS = (LEAGUE, SNAPSHOT)
EPISODE_EXTRAS = "two_player"  # RolloutSpec.episode_extras of the two-player games
# Names of opponents in two-player games: the current policy, scripted players, snapshots.
OPPONENT_NAME = re.compile(r"^(self|random|tactical|negamax\d?|snap\d{1,9})$")
MAX_LEAGUE = 64  # opponents a league message may name


def _opponent(value: Any) -> str:
    if not isinstance(value, str) or not OPPONENT_NAME.match(value):
        raise ProtocolError(f"episode opponent {str(value)[:40]!r} is not an opponent name")
    return value


EPISODE_FIELDS = {
    "opponent": _opponent,
    "seat": lambda v: one_of(v, (0, 1), "episode seat"),
    "result": lambda v: one_of(v, (-1, 0, 1), "episode result"),  # the agent's: win, draw, loss
}


def encode_league(weights: dict[str, float], *, session: str) -> bytes:
    """The opponents actors draw from and their probabilities (learner -> actors, weights socket)."""
    return encode(LEAGUE, session=session, weights={k: float(v) for k, v in weights.items()})


def validate_league(msg: dict[str, Any]) -> dict[str, float]:
    """Opponent name -> probability, checked: known name forms, finite, summing to 1."""
    if msg.get("kind") != LEAGUE or set(msg) != {"v", "kind", "session", "weights"}:
        raise ProtocolError("a league message is a map of session and weights")
    weights = msg["weights"]
    if not isinstance(weights, dict) or not 0 < len(weights) <= MAX_LEAGUE:
        raise ProtocolError(f"league weights must name 1 to {MAX_LEAGUE} opponents")
    out = {}
    for name, w in weights.items():
        if not isinstance(name, str) or not OPPONENT_NAME.match(name):
            raise ProtocolError(f"league names {str(name)[:40]!r}, not an opponent")
        out[name] = finite_float(w, f"league weight of {name}")
        if not 0.0 <= out[name] <= 1.0:
            raise ProtocolError(f"league weight of {name} must lie in [0, 1]")
    if abs(sum(out.values()) - 1.0) > 1e-3:
        raise ProtocolError("league weights must sum to 1")
    return out


def encode_snapshot(name: str, state: dict[str, np.ndarray], *, spec_hash: str, session: str) -> bytes:
    """A frozen policy of the league, by name (``snapK``), for actors to cache."""
    return encode(SNAPSHOT, name=name, spec_hash=spec_hash, session=session,
                  params={k: pack_array(v) for k, v in state.items()})


def validate_snapshot(msg: dict[str, Any], expected: dict[str, tuple[tuple[int, ...], str]],
                      spec_hash: str) -> tuple[str, dict[str, np.ndarray]]:
    if msg.get("kind") != SNAPSHOT or set(msg) != {"v", "kind", "name", "spec_hash", "session", "params"}:
        raise ProtocolError("a snapshot message is a map of name, spec_hash, session, params")
    name = msg["name"]
    if not isinstance(name, str) or not OPPONENT_NAME.match(name) or not name.startswith("snap"):
        raise ProtocolError(f"snapshot name {str(name)[:40]!r} is not snapK")
    if msg["spec_hash"] != spec_hash:
        raise ProtocolError("snapshot is for a different model spec")
    return name, unpack_params(msg, expected)


for _kind in KINDS:
    protocol.register_kind(_kind)
protocol.register_episode_fields(EPISODE_EXTRAS, EPISODE_FIELDS)
