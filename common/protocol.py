"""Messages on the wire: msgpack maps with `v`, `kind` and the kind's fields.

Arrays travel as `{dtype, shape, data}` (plus `codec` when compressed) with dtypes from an
allow-list. Decoding never trusts the sender: size limits, schema and dtype checks,
`nbytes == prod(shape) * itemsize`, shapes equal to the agreed spec, finite numbers.
No pickle and no msgpack ext types anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, make_dataclass
from typing import Any

import lz4.block
import msgpack
import numpy as np

PROTOCOL_VERSION = 2
# Bounds a real actor never exceeds (actors floor/clip to them, the learner rejects beyond them),
# so that nothing an admitted actor sends can overflow the float32 update.
PROB_FLOOR = 1e-30
"""Actors report at least this probability for the action they took."""
LOGP_FLOOR = math.log(PROB_FLOOR)  # about -69.1
MAX_ABS_OBSERVATION = 1e6
"""Float observations are clipped to [-MAX_ABS_OBSERVATION, MAX_ABS_OBSERVATION] by actors."""
KINDS = ["hello", "welcome", "rollout", "weights", "heartbeat", "rejoin"]
"""Every kind on the wire: these, and those a game family adds with `register_kind`."""
TOKEN_CHARS = 64  # the longest token a message may carry (the learner hands out 32 hex chars)
ALLOWED_DTYPES = {
    name: np.dtype(name) for name in ("uint8", "int8", "int32", "int64", "float16", "float32", "bool")
}
CODECS = ("none", "lz4")


class ProtocolError(ValueError):
    """A message that fails decoding or validation; the receiver drops and counts it."""


def register_kind(kind: str) -> None:
    """A message kind a game family adds (it brings its own encode and validate functions)."""
    if kind not in KINDS:
        KINDS.append(kind)


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


@dataclass(frozen=True)
class Limits:
    """How much a decoded message may hold, in objects (bytes are limited apart): a small
    message of many empty containers must not cost seconds and gigabytes to decode."""

    max_array_len: int = 4096
    max_map_len: int = 1024
    max_str_len: int = 4096
    max_containers: int = 8192  # maps and arrays in the whole message


CONTROL_LIMITS = Limits(max_array_len=0, max_map_len=16, max_str_len=512, max_containers=4)
"""hello and heartbeat: a flat map of a few short fields."""


def _head_pairs(buf: bytes, count: int, size: int, max_str: int) -> list[tuple[Any, Any]] | None:
    """Up to `count` leading (key, value) pairs of a msgpack map read from its first `size` bytes,
    every container and binary value refused (a head holds scalars only): the pairs read before
    a cut or an odd value. None when the message does not open with a map."""
    head = msgpack.Unpacker(raw=False, max_buffer_size=size, max_str_len=max_str, max_bin_len=0,
                            max_array_len=0, max_map_len=0, max_ext_len=0, strict_map_key=True)
    head.feed(buf[:size])
    try:
        n = head.read_map_header()
    except Exception:  # not a map, or garbage
        return None
    pairs: list[tuple[Any, Any]] = []
    for _ in range(min(n, count)):
        try:
            pairs.append((head.unpack(), head.unpack()))
        except Exception:  # msgpack raises several unrelated types on a cut or odd value
            return pairs  # the head is what was read before it
    return pairs


def _envelope(buf: bytes) -> tuple[Any, Any]:
    """(v, kind): the first two keys of the message, read before anything else is decoded."""
    pairs = _head_pairs(buf, 2, 64, 32)
    if pairs is None:
        raise ProtocolError("message must be a map")
    if not pairs or pairs[0][0] != "v":
        raise ProtocolError(f"protocol version missing (a message opens with v), expected {PROTOCOL_VERSION}")
    kind = pairs[1][1] if len(pairs) == 2 and pairs[1][0] == "kind" else None
    return pairs[0][1], kind


def _counter(limit: int):
    """A msgpack list/object hook counting containers (and refusing the timestamp ext type,
    which msgpack decodes itself, past ext_hook)."""
    seen = 0

    def hook(container: Any) -> Any:
        nonlocal seen
        seen += 1
        if seen > limit:
            raise ProtocolError(f"message holds more than {limit} maps and arrays")
        values = container.values() if isinstance(container, dict) else container
        if any(isinstance(x, msgpack.Timestamp) for x in values):
            raise ProtocolError("msgpack ext types are not accepted")
        return container

    return hook


def peek_kind(buf: bytes) -> Any:
    """The `kind` a message names, read from its first bytes without decoding the rest (None
    when it has none); nothing about the message is checked yet."""
    try:
        return _envelope(buf)[1]
    except ProtocolError:
        return None


def decode(buf: bytes, *, max_bytes: int = 64 << 20,
           kinds: dict[str, Limits] | None = None) -> dict[str, Any]:
    """The message map, after envelope checks; ProtocolError on anything malformed.

    `v` and `kind` must open the message and are checked first; `kinds` (kind -> Limits) says
    which kinds this receiver takes and how large each may be; the body is decoded only then,
    within those limits.
    """
    if len(buf) > max_bytes:
        raise ProtocolError(f"message of {len(buf)} bytes is over the limit of {max_bytes}")
    v, kind = _envelope(buf)
    if type(v) is not int or v != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {v!r}, expected {PROTOCOL_VERSION}")
    if kind not in KINDS:
        raise ProtocolError(f"unknown kind {kind!r}")
    if kinds is not None and kind not in kinds:
        raise ProtocolError(f"{kind} is not taken here (only {', '.join(kinds)})")
    limits = kinds[kind] if kinds is not None else Limits()
    hook = _counter(limits.max_containers)
    try:
        msg = msgpack.unpackb(
            buf, raw=False, strict_map_key=True, ext_hook=_no_ext, max_bin_len=max_bytes,
            max_str_len=limits.max_str_len, max_array_len=limits.max_array_len,
            max_map_len=limits.max_map_len, list_hook=hook, object_hook=hook,
        )
    except ProtocolError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise ProtocolError(f"not a msgpack document: {type(exc).__name__}") from None
    if not isinstance(msg, dict):  # pragma: no cover (the envelope read a map header)
        raise ProtocolError("message must be a map")
    return msg


def _int(msg: dict, key: str, lo: int = 0, hi: int = 1 << 62) -> int:
    value = msg.get(key)
    if type(value) is not int or not lo <= value <= hi:
        raise ProtocolError(f"{key} must be an int in [{lo}, {hi}], got {value!r}")
    return value


def finite_float(value: Any, what: str) -> float:
    """`value` as a float when it is a finite number; ProtocolError otherwise."""
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
    max_abs_reward: float = 1e6
    max_episode_steps: int | None = None
    action_mask: bool = False  # rollouts carry action_mask [T, n_actions] (legal actions)
    episode_extras: str = ""  # episodes also carry these registered fields (register_episode_fields)
    n_arms: int = 0  # --exploration adaptive: episodes carry the arm (index) their actor chose
    state_shape: tuple[int, ...] = (0,)  # the recurrent state at a rollout's start; (0,) = none
    state_bound: tuple[float, ...] = ()  # the most |x| of each row of the state (its first axis)
    lives: bool = False  # episodes end at a lost life and carry game_over (common/families/atari.py)

    @property
    def max_rollout_bytes(self) -> int:
        """Uncompressed payload of one rollout: the most a message carries (headers aside):
        T+1 frames, the stack's history and at most T final frames of truncated steps."""
        frame = math.prod(self.frame_shape) * ALLOWED_DTYPES[self.frame_dtype].itemsize
        mask = self.unroll_length * self.n_actions if self.action_mask else 0
        state = math.prod(self.state_shape) * 4
        return (2 * self.unroll_length + self.frame_stack) * frame + self.unroll_length * 18 + mask + state + 1024

    @property
    def max_message_bytes(self) -> int:
        """The largest well-formed rollout message: the payload, lz4's worst case (0.4 % more
        than the input), the episodes and the headers. The rollout socket refuses more."""
        return int(self.max_rollout_bytes * 1.01) + 256 * self.unroll_length + 4096

    @property
    def limits(self) -> Limits:
        """Objects a rollout message may hold: a map of fields, a map and a shape list per
        array, a list of at most T episode maps."""
        return Limits(max_array_len=max(self.unroll_length, 8), max_map_len=32, max_str_len=256,
                      max_containers=self.unroll_length + 64)


class _RolloutBase:
    """What every Rollout offers besides its fields (which ROLLOUT_FIELDS makes)."""

    @property
    def steps(self) -> int:
        return len(self.actions)

    @property
    def dones(self) -> np.ndarray:
        return self.terminated | self.truncated

    @property
    def cut(self) -> np.ndarray:
        """[T] steps a time limit ended without the game ending: they bootstrap, not terminate."""
        return self.truncated & ~self.terminated

    def finals(self) -> np.ndarray:
        """final_frames, empty ([0, *frame_shape]) when there are none."""
        if self.final_frames is not None:
            return self.final_frames
        return np.zeros((0, *self.frames.shape[1:]), self.frames.dtype)


def _no_check(a: np.ndarray, spec: RolloutSpec, got: dict[str, np.ndarray]) -> None:
    return None


@dataclass(frozen=True)
class RolloutField:
    """One array a rollout carries: its dtype and shape under the spec (from the fields decoded
    before it), its value check, and how collate joins it into a Batch."""

    name: str
    dtype: str  # "frame": the spec's frame dtype
    shape: Callable[[RolloutSpec, dict[str, np.ndarray]], tuple[int, ...]]
    check: Callable[[np.ndarray, RolloutSpec, dict[str, np.ndarray]], None] = _no_check
    optional: bool = False  # None in a Rollout allowed; see `empty` for the wire
    empty: Callable[[Any], np.ndarray] | None = None  # optional: what the wire carries for None (None: omitted)
    present: Callable[[RolloutSpec], bool] = lambda spec: True
    batch: str | None = "time"  # time: [T, B, ...] in a Batch; rollout: [B, ...]; None: collate's own
    batch_dtype: str | None = None  # the Batch's dtype, when another than the wire's
    may_omit: bool = False  # a sender without it leaves it out of the message (the Rollout holds None)
    fill: Callable[[Any], np.ndarray] | None = None  # collate's value for a rollout without it, beside others with it

    def wire_dtype(self, spec: RolloutSpec) -> str:
        return spec.frame_dtype if self.dtype == "frame" else self.dtype


def _T(spec: RolloutSpec, got: dict) -> tuple[int, ...]:
    return (spec.unroll_length,)


def _logp_check(name: str) -> Callable[[np.ndarray, RolloutSpec, dict], None]:
    def check(logp: np.ndarray, spec: RolloutSpec, got: dict) -> None:
        # float32 rounding of a float64 log: a hair beyond the bounds is still an honest actor
        if not (np.isfinite(logp).all() and (logp <= 1e-4).all() and (logp >= LOGP_FLOOR - 1e-3).all()):
            raise ProtocolError(f"{name} must be log-probabilities in [{LOGP_FLOOR:.1f}, 0]")

    return check


def _check_rewards(rewards: np.ndarray, spec: RolloutSpec, got: dict) -> None:
    if not (np.isfinite(rewards).all() and np.abs(rewards).max() <= spec.max_abs_reward):
        raise ProtocolError(f"rewards must be finite and within +-{spec.max_abs_reward:g} (--max-abs-reward)")


def _check_actions(actions: np.ndarray, spec: RolloutSpec, got: dict) -> None:
    if actions.min() < 0 or actions.max() >= spec.n_actions:
        raise ProtocolError(f"actions must lie in [0, {spec.n_actions})")


def _check_core_state(state: np.ndarray, spec: RolloutSpec, got: dict) -> None:
    if state.size and not (np.isfinite(state).all() and (np.abs(state).reshape(len(state), -1).max(axis=1)
                                                         <= np.asarray(spec.state_bound) * (1 + 1e-6)).all()):
        bounds = ", ".join(f"{b:g}" for b in spec.state_bound)
        raise ProtocolError(f"core_state must be finite and within +-({bounds}) row by row")


ROLLOUT_FIELDS: tuple[RolloutField, ...] = (
    RolloutField("frames", "frame", lambda spec, got: (spec.unroll_length + 1, *spec.frame_shape),
                 lambda a, spec, got: _check_observations(a, "observations"), batch=None),
    RolloutField("history", "frame", lambda spec, got: (spec.frame_stack - 1, *spec.frame_shape),
                 lambda a, spec, got: _check_observations(a, "history observations"), batch=None),
    RolloutField("actions", "int32", _T, _check_actions, batch_dtype="int64"),
    RolloutField("behaviour_logp", "float32", _T, _logp_check("behaviour_logp")),
    RolloutField("rewards", "float32", _T, _check_rewards),
    RolloutField("terminated", "bool", _T),
    RolloutField("truncated", "bool", _T, batch=None),  # a Batch keeps `cut` instead
    # [K, *frame_shape]: the newest frame of the observation a time limit hid, one per step
    # that is truncated and not terminated (in step order)
    RolloutField("final_frames", "frame",
                 lambda spec, got: (int((got["truncated"] & ~got["terminated"]).sum()), *spec.frame_shape),
                 lambda a, spec, got: _check_observations(a, "final observations"),
                 optional=True, empty=lambda r: r.finals(), batch=None),
    RolloutField("action_mask", "bool", lambda spec, got: (spec.unroll_length, spec.n_actions),
                 lambda a, spec, got: _check_mask(a, got["actions"]), optional=True,
                 present=lambda spec: spec.action_mask),
    # the recurrent state the actor held at frames[0] (empty for feed-forward policies)
    RolloutField("core_state", "float32", lambda spec, got: tuple(spec.state_shape), _check_core_state,
                 optional=True, empty=lambda r: np.zeros(0, np.float32), batch="rollout"),
    # exploration (issues 17, 22): the log-prob under the actor's unmixed policy, the PPO ratio's
    # reference; sent only by actors that mixed noise in (behaviour_logp stays V-trace's mixture)
    RolloutField("policy_logp", "float32", _T, _logp_check("policy_logp"), optional=True,
                 may_omit=True, fill=lambda r: r.behaviour_logp),
)
"""The rollout schema, once: the Rollout dataclass, the wire encoding, its bounds and the
validation, the learner's Batch and collate all derive from it."""



def rollout_class(fields: tuple[RolloutField, ...]) -> type:
    """The Rollout dataclass of a field table: actor_id, policy_version, the required arrays,
    episodes, token, then the optional arrays (None by default)."""
    cls = make_dataclass(
        "Rollout",
        [("actor_id", int), ("policy_version", int)]
        + [(f.name, np.ndarray) for f in fields if not f.optional]
        + [("episodes", list, field(default_factory=list)),
           ("token", str, field(default=""))]  # the secret the welcome gave this actor; binds the rollout to it
        + [(f.name, "np.ndarray | None", field(default=None)) for f in fields if f.optional],
        bases=(_RolloutBase,), namespace={"__module__": __name__},
    )
    cls.__doc__ = ("A validated rollout. `frames[t]` is the newest frame seen at step t; frames[T] "
                   "bootstraps. Its arrays are those of ROLLOUT_FIELDS.")
    return cls


Rollout = rollout_class(ROLLOUT_FIELDS)


def encode_rollout(r: Rollout, codec: str = "lz4", *, token: str | None = None) -> bytes:
    """A rollout as one message (carrying `token`, default r.token); image frames compressed
    with `codec`."""
    frame_codec = codec if r.frames.dtype == np.uint8 else "none"
    arrays = {}
    for f in ROLLOUT_FIELDS:
        value = getattr(r, f.name, None)
        if value is None:
            if f.empty is None:
                continue
            value = f.empty(r)
        arrays[f.name] = pack_array(value, frame_codec if f.dtype == "frame" else "none")
    return encode("rollout", actor_id=r.actor_id, token=r.token if token is None else token,
                  policy_version=r.policy_version, episodes=r.episodes, **arrays)


def rollout_keys(spec: RolloutSpec) -> set[str]:
    """The keys every rollout message under `spec` has (besides those a sender may omit)."""
    return {"v", "kind", "actor_id", "token", "policy_version", "episodes"} | {
        f.name for f in ROLLOUT_FIELDS if f.present(spec) and not f.may_omit}


def omissible_keys(spec: RolloutSpec) -> set[str]:
    """The keys a rollout message under `spec` may have or leave out."""
    return {f.name for f in ROLLOUT_FIELDS if f.present(spec) and f.may_omit}




def _token(value: Any) -> str:
    if not isinstance(value, str) or len(value) > TOKEN_CHARS:
        raise ProtocolError("token must be a short string")
    return value


def _count(value: Any, what: str) -> int:
    if type(value) is not int or not 1 <= value <= 1 << 40:
        raise ProtocolError(f"{what} must be a positive int, got {value!r}")
    return value


# An episode's fields and how each is checked here (types and finiteness; how they fit the
# rollout is learner/episodes.py's business); a game family may add a named set of its own.
EPISODE_FIELDS = {
    "return": lambda v: finite_float(v, "episode return"),
    "length": lambda v: _count(v, "episode length"),
    "frames": lambda v: _count(v, "episode frames"),
}
EPISODE_EXTRAS: dict[str, dict[str, Callable[[Any], Any]]] = {}
"""Named sets of extra episode fields (RolloutSpec.episode_extras), each field with its check."""


def register_episode_fields(name: str, fields: dict[str, Callable[[Any], Any]]) -> None:
    """Extra fields every episode of a game family carries (`RolloutSpec.episode_extras = name`);
    each check returns the clean value or raises ProtocolError."""
    if set(fields) & set(EPISODE_FIELDS):
        raise ValueError(f"episode fields {sorted(set(fields) & set(EPISODE_FIELDS))} are already taken")
    EPISODE_EXTRAS[name] = dict(fields)


def rollout_identity(msg: dict[str, Any]) -> tuple[int, str]:
    """(actor_id, token) of a decoded rollout: checked before anything costly is."""
    return _int(msg, "actor_id", 0, 1 << 31), _token(msg.get("token"))


def _check_observations(a: np.ndarray, what: str) -> None:
    if a.dtype.kind == "f" and a.size and not (np.isfinite(a).all()
                                               and np.abs(a).max() <= MAX_ABS_OBSERVATION):
        raise ProtocolError(f"{what} must be finite and within +-{MAX_ABS_OBSERVATION:g}")


class IllegalAction(ProtocolError):
    """A rollout whose action the mask it carries forbids: counted as an illegal move."""


def _check_mask(mask: np.ndarray, actions: np.ndarray) -> None:
    if not mask.any(axis=1).all():
        raise ProtocolError("action_mask has a step with no legal action")
    illegal = int((~mask[np.arange(len(actions)), actions]).sum())
    if illegal:
        raise IllegalAction(f"{illegal} actions the rollout's own action_mask forbids")


def one_of(value: Any, allowed: tuple[int, ...], what: str) -> int:
    """`value` when it is one of the ints `allowed`; ProtocolError otherwise."""
    if type(value) is not int or value not in allowed:
        raise ProtocolError(f"{what} must be one of {allowed}, got {str(value)[:40]}")
    return value


def _game_over(value: Any) -> bool:
    if type(value) is not bool:
        raise ProtocolError(f"episode game_over must be true or false, got {str(value)[:40]}")
    return value


LIVES_FIELDS = {"game_over": _game_over}  # False: a life was lost and the game goes on


def _arm(value: Any, n_arms: int) -> int:
    if type(value) is not int or not 0 <= value < n_arms:
        raise ProtocolError(f"episode arm must be an int in [0, {n_arms}), got {str(value)[:40]}")
    return value


def episode_fields(spec: RolloutSpec) -> dict[str, Any]:
    """The fields every episode of a rollout has under `spec`, each with its check."""
    fields = EPISODE_FIELDS | (LIVES_FIELDS if spec.lives else {})
    if spec.n_arms:
        fields = fields | {"arm": lambda v: _arm(v, spec.n_arms)}
    if not spec.episode_extras:
        return fields
    if spec.episode_extras not in EPISODE_EXTRAS:
        raise KeyError(f"episode fields {spec.episode_extras!r} were never registered (import its game family)")
    return fields | EPISODE_EXTRAS[spec.episode_extras]


def validate_rollout(msg: dict[str, Any], spec: RolloutSpec, *, latest_version: int,
                     max_bytes: int = 1 << 28) -> Rollout:
    """A decoded rollout message checked against the spec; ProtocolError if it fails.

    Values are bounded by what a real actor produces: log-probabilities in [LOGP_FLOOR, 0],
    rewards within +-spec.max_abs_reward, float observations finite and within
    +-MAX_ABS_OBSERVATION.
    """
    if msg.get("kind") != "rollout":
        raise ProtocolError(f"expected a rollout, got {msg.get('kind')!r}")
    keys = rollout_keys(spec)
    if set(msg) - omissible_keys(spec) != keys:
        raise ProtocolError(f"rollout fields differ from the schema: {sorted((set(msg) - omissible_keys(spec)) ^ keys)}")
    actor_id = _int(msg, "actor_id", 0, 1 << 31)
    token = _token(msg["token"])
    version = _int(msg, "policy_version", 0, latest_version)
    got: dict[str, np.ndarray] = {}
    for f in ROLLOUT_FIELDS:  # in table order: a shape may depend on fields before it
        if not f.present(spec) or (f.may_omit and f.name not in msg):
            continue
        got[f.name] = unpack_array(msg[f.name], dtype=f.wire_dtype(spec), shape=f.shape(spec, got),
                                   max_bytes=max_bytes)
        f.check(got[f.name], spec, got)
    episodes = msg["episodes"]
    if not isinstance(episodes, list) or len(episodes) > spec.unroll_length:
        raise ProtocolError("episodes must be a list of at most unroll_length entries")
    clean = []
    fields = episode_fields(spec)
    for ep in episodes:
        if not isinstance(ep, dict) or set(ep) != set(fields):
            raise ProtocolError(f"an episode is a map of {', '.join(fields)}")
        clean.append({k: check(ep[k]) for k, check in fields.items()})
    return Rollout(actor_id=actor_id, policy_version=version, episodes=clean, token=token, **got)


# ---------------------------------------------------------------------------- heartbeat

HEARTBEAT_KEYS = {"v", "kind", "actor_id", "session", "token"}


def validate_heartbeat(msg: dict[str, Any]) -> tuple[int, str, str]:
    """(actor_id, session, token) of a decoded heartbeat: an actor saying it is alive."""
    if msg.get("kind") != "heartbeat":
        raise ProtocolError(f"expected a heartbeat, got {msg.get('kind')!r}")
    if set(msg) != HEARTBEAT_KEYS:
        raise ProtocolError(f"heartbeat fields differ from the schema: {sorted(set(msg) ^ HEARTBEAT_KEYS)}")
    session = msg["session"]
    if not isinstance(session, str) or len(session) > 64:
        raise ProtocolError("heartbeat session must be a short string")
    return _int(msg, "actor_id", 0, 1 << 31), session, _token(msg["token"])


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
    return unpack_params(msg, expected)


def peek_weights(buf: bytes) -> tuple[int, str] | None:
    """(version, session) of a weights message, read from its first bytes without decoding its
    parameters (None when the head is not that of a well-formed weights message). An actor sees
    the same version republished every few seconds; this lets it skip the 6.7 MB decode."""
    found = _head_pairs(buf, 5, 256, 128)
    keys = [k for k, _ in found or ()]
    if keys[:2] != ["v", "kind"]:  # as decode: v and kind open every message
        return None
    pairs = dict(found or ())
    version, session = pairs.get("version"), pairs.get("session")
    if (pairs.get("v") != PROTOCOL_VERSION or pairs.get("kind") != "weights"
            or type(version) is not int or not isinstance(session, str)):
        return None
    return version, session


def unpack_params(msg: dict[str, Any], expected: dict[str, tuple[tuple[int, ...], str]]) -> dict[str, np.ndarray]:
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
