"""Messages on the wire: msgpack maps with `v`, `kind` and the kind's fields.

Arrays travel as `{dtype, shape, data}` (plus `codec` when compressed) with dtypes from an
allow-list. Decoding never trusts the sender: size limits, schema and dtype checks,
`nbytes == prod(shape) * itemsize`, shapes equal to the agreed spec, finite numbers.
No pickle and no msgpack ext types anywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import lz4.block
import msgpack
import numpy as np

PROTOCOL_VERSION = 1
KINDS = ("hello", "welcome", "rollout", "weights", "heartbeat")
ALLOWED_DTYPES = {
    name: np.dtype(name) for name in ("uint8", "int8", "int32", "int64", "float16", "float32", "bool")
}
CODECS = ("none", "lz4")


class ProtocolError(ValueError):
    """A message that fails decoding or validation; the receiver drops and counts it."""


# ---------------------------------------------------------------------------- arrays


def pack_array(a: np.ndarray, codec: str = "none") -> dict[str, Any]:
    """An array as a msgpack-ready map; `codec="lz4"` compresses the bytes."""
    shape = list(np.shape(a))  # before ascontiguousarray, which turns 0-d into 1-d
    a = np.ascontiguousarray(a)
    if a.dtype.name not in ALLOWED_DTYPES:
        raise ProtocolError(f"dtype {a.dtype} is not allowed on the wire")
    out: dict[str, Any] = {"dtype": a.dtype.name, "shape": shape}
    if codec == "lz4":
        out["codec"] = "lz4"
        out["data"] = lz4.block.compress(a.data, store_size=False)
    else:
        out["data"] = a.tobytes()
    return out


def unpack_array(
    d: Any, *, dtype: str | None = None, shape: tuple[int, ...] | None = None, max_bytes: int = 1 << 28
) -> np.ndarray:
    """The array a packed map describes; ProtocolError if anything about it is off."""
    if not isinstance(d, dict) or set(d) - {"dtype", "shape", "data", "codec"}:
        raise ProtocolError("array must be a map of dtype, shape, data[, codec]")
    name, dims, data = d.get("dtype"), d.get("shape"), d.get("data")
    if name not in ALLOWED_DTYPES:
        raise ProtocolError(f"dtype {name!r} is not allowed")
    if dtype is not None and name != dtype:
        raise ProtocolError(f"dtype {name} where {dtype} was agreed")
    if not isinstance(dims, list) or not all(type(n) is int and 0 <= n < 1 << 31 for n in dims):
        raise ProtocolError("shape must be a list of non-negative ints")
    if shape is not None and tuple(dims) != tuple(shape):
        raise ProtocolError(f"shape {tuple(dims)} where {tuple(shape)} was agreed")
    if not isinstance(data, bytes):
        raise ProtocolError("array data must be msgpack bin")
    dt = ALLOWED_DTYPES[name]
    nbytes = math.prod(dims) * dt.itemsize
    if nbytes > max_bytes:
        raise ProtocolError(f"array of {nbytes} bytes is over the limit of {max_bytes}")
    codec = d.get("codec", "none")
    if codec == "lz4":
        try:
            data = lz4.block.decompress(data, uncompressed_size=nbytes)
        except lz4.block.LZ4BlockError as exc:
            raise ProtocolError(f"lz4 data does not decompress to {nbytes} bytes: {exc}") from None
    elif codec != "none":
        raise ProtocolError(f"unknown codec {codec!r}")
    if len(data) != nbytes:
        raise ProtocolError(f"data has {len(data)} bytes, shape and dtype say {nbytes}")
    return np.frombuffer(data, dtype=dt).reshape(dims)


# ---------------------------------------------------------------------------- envelope


def encode(kind: str, **fields: Any) -> bytes:
    """One message as msgpack bytes."""
    if kind not in KINDS:
        raise ProtocolError(f"unknown kind {kind!r}")
    return msgpack.packb({"v": PROTOCOL_VERSION, "kind": kind, **fields}, use_bin_type=True)


def _no_ext(code: int, data: bytes) -> Any:
    raise ProtocolError("msgpack ext types are not accepted")


def _reject_timestamps(node: Any, depth: int = 0) -> None:
    """msgpack decodes its timestamp ext type itself, past ext_hook; refuse it here."""
    if isinstance(node, msgpack.Timestamp):
        raise ProtocolError("msgpack ext types are not accepted")
    if depth > 8:
        raise ProtocolError("message nests too deeply")
    if isinstance(node, dict):
        for value in node.values():
            _reject_timestamps(value, depth + 1)
    elif isinstance(node, list):
        for value in node:
            _reject_timestamps(value, depth + 1)


def decode(buf: bytes, *, max_bytes: int = 64 << 20) -> dict[str, Any]:
    """The message map, after envelope checks; ProtocolError on anything malformed."""
    if len(buf) > max_bytes:
        raise ProtocolError(f"message of {len(buf)} bytes is over the limit of {max_bytes}")
    try:
        msg = msgpack.unpackb(
            buf, raw=False, strict_map_key=True, ext_hook=_no_ext, max_bin_len=max_bytes,
            max_str_len=1 << 16, max_array_len=1 << 16, max_map_len=1 << 12,
        )
    except ProtocolError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise ProtocolError(f"not a msgpack document: {type(exc).__name__}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("message must be a map")
    _reject_timestamps(msg)
    if type(msg.get("v")) is not int or msg["v"] != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {msg.get('v')!r}, expected {PROTOCOL_VERSION}")
    if msg.get("kind") not in KINDS:
        raise ProtocolError(f"unknown kind {msg.get('kind')!r}")
    return msg


def _int(msg: dict, key: str, lo: int = 0, hi: int = 1 << 62) -> int:
    value = msg.get(key)
    if type(value) is not int or not lo <= value <= hi:
        raise ProtocolError(f"{key} must be an int in [{lo}, {hi}], got {value!r}")
    return value


def _float(value: Any, what: str) -> float:
    if type(value) not in (int, float) or not math.isfinite(value):
        raise ProtocolError(f"{what} must be a finite number, got {value!r}")
    return float(value)


# ---------------------------------------------------------------------------- rollouts


@dataclass(frozen=True)
class RolloutSpec:
    """What every rollout must look like; agreed in the welcome message."""

    unroll_length: int
    frame_shape: tuple[int, ...]
    frame_dtype: str
    frame_stack: int
    n_actions: int
    frame_skip: int = 1

    @property
    def max_rollout_bytes(self) -> int:
        """Uncompressed payload of one rollout: the most a message carries (headers aside)."""
        frame = math.prod(self.frame_shape) * ALLOWED_DTYPES[self.frame_dtype].itemsize
        return (self.unroll_length + self.frame_stack) * frame + self.unroll_length * 14 + 1024


@dataclass
class Rollout:
    """A validated rollout. `frames[t]` is the newest frame seen at step t; frames[T] bootstraps."""

    actor_id: int
    policy_version: int
    frames: np.ndarray  # [T+1, *frame_shape]
    history: np.ndarray  # [frame_stack-1, *frame_shape]: older frames of frames[0]'s stack
    actions: np.ndarray  # [T] int32
    behaviour_logp: np.ndarray  # [T] float32
    rewards: np.ndarray  # [T] float32
    terminated: np.ndarray  # [T] bool
    truncated: np.ndarray  # [T] bool
    episodes: list[dict[str, float]] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return len(self.actions)


def encode_rollout(r: Rollout, codec: str = "lz4") -> bytes:
    """A rollout as one message; image frames compressed with `codec`."""
    frame_codec = codec if r.frames.dtype == np.uint8 else "none"
    return encode(
        "rollout",
        actor_id=r.actor_id,
        policy_version=r.policy_version,
        frames=pack_array(r.frames, frame_codec),
        history=pack_array(r.history, frame_codec),
        actions=pack_array(r.actions),
        behaviour_logp=pack_array(r.behaviour_logp),
        rewards=pack_array(r.rewards),
        terminated=pack_array(r.terminated),
        truncated=pack_array(r.truncated),
        episodes=r.episodes,
    )


ROLLOUT_KEYS = {"v", "kind", "actor_id", "policy_version", "frames", "history", "actions",
                "behaviour_logp", "rewards", "terminated", "truncated", "episodes"}


def validate_rollout(msg: dict[str, Any], spec: RolloutSpec, *, latest_version: int,
                     max_bytes: int = 1 << 28) -> Rollout:
    """A decoded rollout message checked against the spec; ProtocolError if it fails."""
    if msg.get("kind") != "rollout":
        raise ProtocolError(f"expected a rollout, got {msg.get('kind')!r}")
    if set(msg) != ROLLOUT_KEYS:
        raise ProtocolError(f"rollout fields differ from the schema: {sorted(set(msg) ^ ROLLOUT_KEYS)}")
    T = spec.unroll_length
    actor_id = _int(msg, "actor_id", 0, 1 << 31)
    version = _int(msg, "policy_version", 0, latest_version)
    kw = {"max_bytes": max_bytes}
    frames = unpack_array(msg["frames"], dtype=spec.frame_dtype, shape=(T + 1, *spec.frame_shape), **kw)
    history = unpack_array(msg["history"], dtype=spec.frame_dtype,
                           shape=(spec.frame_stack - 1, *spec.frame_shape), **kw)
    actions = unpack_array(msg["actions"], dtype="int32", shape=(T,), **kw)
    logp = unpack_array(msg["behaviour_logp"], dtype="float32", shape=(T,), **kw)
    rewards = unpack_array(msg["rewards"], dtype="float32", shape=(T,), **kw)
    terminated = unpack_array(msg["terminated"], dtype="bool", shape=(T,), **kw)
    truncated = unpack_array(msg["truncated"], dtype="bool", shape=(T,), **kw)
    if frames.dtype.kind == "f" and not np.isfinite(frames).all():
        raise ProtocolError("observations must be finite")
    if not np.isfinite(rewards).all():
        raise ProtocolError("rewards must be finite")
    if not (np.isfinite(logp).all() and (logp <= 1e-4).all()):
        raise ProtocolError("behaviour_logp must be finite log-probabilities")
    if actions.min() < 0 or actions.max() >= spec.n_actions:
        raise ProtocolError(f"actions must lie in [0, {spec.n_actions})")
    episodes = msg["episodes"]
    if not isinstance(episodes, list) or len(episodes) > T:
        raise ProtocolError("episodes must be a list of at most unroll_length entries")
    clean = []
    for ep in episodes:
        if not isinstance(ep, dict) or set(ep) != {"return", "length", "frames"}:
            raise ProtocolError("an episode is a map of return, length, frames")
        clean.append({"return": _float(ep["return"], "episode return"),
                      "length": _float(ep["length"], "episode length"),
                      "frames": _float(ep["frames"], "episode frames")})
    return Rollout(actor_id, version, frames, history, actions, logp, rewards, terminated,
                   truncated, clean)


# ---------------------------------------------------------------------------- heartbeat

HEARTBEAT_KEYS = {"v", "kind", "actor_id", "session"}


def validate_heartbeat(msg: dict[str, Any]) -> tuple[int, str]:
    """(actor_id, session) of a decoded heartbeat: an actor saying it is alive (control socket)."""
    if msg.get("kind") != "heartbeat":
        raise ProtocolError(f"expected a heartbeat, got {msg.get('kind')!r}")
    if set(msg) != HEARTBEAT_KEYS:
        raise ProtocolError(f"heartbeat fields differ from the schema: {sorted(set(msg) ^ HEARTBEAT_KEYS)}")
    session = msg["session"]
    if not isinstance(session, str) or len(session) > 64:
        raise ProtocolError("heartbeat session must be a short string")
    return _int(msg, "actor_id", 0, 1 << 31), session


# ---------------------------------------------------------------------------- weights


def encode_weights(state: dict[str, np.ndarray], *, version: int, spec_hash: str, session: str) -> bytes:
    """The policy's parameters, its version and the hash of the model spec."""
    return encode("weights", version=version, spec_hash=spec_hash, session=session,
                  params={k: pack_array(v) for k, v in state.items()})


def validate_weights(msg: dict[str, Any], expected: dict[str, tuple[tuple[int, ...], str]],
                     spec_hash: str) -> dict[str, np.ndarray]:
    """Parameters checked against the expected names, shapes and dtypes."""
    if msg.get("kind") != "weights":
        raise ProtocolError(f"expected weights, got {msg.get('kind')!r}")
    if msg.get("spec_hash") != spec_hash:
        raise ProtocolError("weights are for a different model spec")
    _int(msg, "version")
    params = msg.get("params")
    if not isinstance(params, dict) or set(params) != set(expected):
        raise ProtocolError("weights name other parameters than the model has")
    out = {}
    for name, (shape, dtype) in expected.items():
        arr = unpack_array(params[name], dtype=dtype, shape=shape)
        if not np.isfinite(arr).all():
            raise ProtocolError(f"parameter {name} is not finite")
        out[name] = arr
    return out
