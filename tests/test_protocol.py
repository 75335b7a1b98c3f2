"""Wire protocol: round trips of every kind, and rejection of every kind of bad message."""

from __future__ import annotations

import dataclasses
import math

import lz4.block
import msgpack
import numpy as np
import pytest

from common.protocol import (
    LOGP_FLOOR,
    MAX_ABS_OBSERVATION,
    PROTOCOL_VERSION,
    ProtocolError,
    Rollout,
    RolloutSpec,
    decode,
    encode,
    encode_rollout,
    encode_weights,
    pack_array,
    unpack_array,
    validate_rollout,
    validate_weights,
)

T = 6
ATARI = RolloutSpec(
    unroll_length=T,
    frame_shape=(8, 8),
    frame_dtype="uint8",
    frame_stack=4,
    n_actions=5,
    frame_skip=4,
)
CARTPOLE = RolloutSpec(
    unroll_length=T, frame_shape=(4,), frame_dtype="float32", frame_stack=1, n_actions=2
)
SPEC_HASH = "abc123"
EXPECTED = {"w": ((3, 4), "float32"), "b": ((4,), "float32"), "steps": ((1,), "int64")}
ARRAY_FIELDS = (
    "final_frames",
    "frames",
    "history",
    "actions",
    "behaviour_logp",
    "rewards",
    "terminated",
    "truncated",
)


def make_rollout(spec: RolloutSpec, seed: int = 0, **overrides) -> Rollout:
    rng = np.random.default_rng(seed)
    shape = spec.frame_shape
    if spec.frame_dtype == "uint8":
        frames = rng.integers(0, 256, (T + 1, *shape), dtype=np.uint8)
        history = rng.integers(0, 256, (spec.frame_stack - 1, *shape), dtype=np.uint8)
    else:
        frames = rng.standard_normal((T + 1, *shape)).astype(spec.frame_dtype)
        history = np.zeros((spec.frame_stack - 1, *shape), dtype=spec.frame_dtype)
    terminated = np.zeros(T, dtype=bool)
    terminated[2] = True
    truncated = np.zeros(T, dtype=bool)
    truncated[T - 1] = True  # a time limit: the observation it hid travels in final_frames
    fields = dict(
        actor_id=3,
        policy_version=7,
        frames=frames,
        history=history,
        actions=rng.integers(0, spec.n_actions, T).astype(np.int32),
        behaviour_logp=-rng.random(T).astype(np.float32),
        rewards=rng.standard_normal(T).astype(np.float32),
        terminated=terminated,
        truncated=truncated,
        episodes=[
            {"return": 1.5, "length": 3, "frames": 12},
            {"return": -2, "length": 3, "frames": 12},
        ],
        final_frames=frames[:1].copy() + 1 if spec.frame_dtype == "uint8" else frames[:1] + 1,
    )
    fields.update(overrides)
    return Rollout(**fields)


def roundtrip(r: Rollout, spec: RolloutSpec, codec: str = "lz4", latest: int = 10, **kw) -> Rollout:
    return validate_rollout(decode(encode_rollout(r, codec)), spec, latest_version=latest, **kw)


def rollout_msg(spec: RolloutSpec = ATARI, **overrides) -> dict:
    """A decoded, valid rollout message to corrupt."""
    return decode(encode_rollout(make_rollout(spec, **overrides)))


def make_state(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "w": rng.standard_normal((3, 4)).astype(np.float32),
        "b": rng.standard_normal(4).astype(np.float32),
        "steps": np.array([42], dtype=np.int64),
    }


def weights_msg(state: dict[str, np.ndarray] | None = None, spec_hash: str = SPEC_HASH) -> dict:
    return decode(
        encode_weights(
            make_state() if state is None else state, version=5, spec_hash=spec_hash, session="s1"
        )
    )


def raw(msg: dict) -> bytes:
    """Re-encode a (possibly corrupted) message map without any checks."""
    return msgpack.packb(msg, use_bin_type=True)


# ---------------------------------------------------------------------------- round trips


def test_hello_and_welcome_round_trip():
    hello = decode(encode("hello", host="box", pid=1234, previous_id=None))
    assert hello == {
        "v": PROTOCOL_VERSION,
        "kind": "hello",
        "host": "box",
        "pid": 1234,
        "previous_id": None,
    }
    settings = {
        "env": "CartPole-v1",
        "env_kwargs": {"frame_skip": 1, "max_episode_steps": None},
        "unroll_length": 32,
        "model": {"kind": "mlp", "obs_shape": [4], "n_actions": 2},
        "max_message_bytes": 1 << 20,
        "publish_interval": 2.0,
    }
    welcome = decode(
        encode("welcome", actor_id=0, seed=2**63 - 1, epsilon=0.4, session="abc", settings=settings)
    )
    assert welcome == {
        "v": PROTOCOL_VERSION,
        "kind": "welcome",
        "actor_id": 0,
        "seed": 2**63 - 1,
        "epsilon": 0.4,
        "session": "abc",
        "settings": settings,
    }


@pytest.mark.parametrize("codec", ["lz4", "none"])
@pytest.mark.parametrize("spec", [ATARI, CARTPOLE], ids=["uint8-images", "float32-vectors"])
def test_rollout_round_trip(spec, codec):
    r = make_rollout(spec)
    got = roundtrip(r, spec, codec)
    for name in ARRAY_FIELDS:
        a, b = getattr(r, name), getattr(got, name)
        assert b.dtype == a.dtype and b.shape == a.shape, name
        np.testing.assert_array_equal(b, a, err_msg=name)
    assert (got.actor_id, got.policy_version, got.steps) == (3, 7, T)
    assert got.episodes == [
        {"return": 1.5, "length": 3, "frames": 12},
        {"return": -2.0, "length": 3, "frames": 12},
    ]
    if spec is CARTPOLE:
        assert got.history.shape == (0, 4)


def test_rollout_frames_compressed_only_with_lz4():
    r = make_rollout(ATARI, frames=np.zeros((T + 1, 8, 8), np.uint8))
    packed = decode(encode_rollout(r, "lz4"))["frames"]
    assert packed["codec"] == "lz4" and len(packed["data"]) < r.frames.nbytes
    assert "codec" not in decode(encode_rollout(r, "none"))["frames"]
    # float frames are never compressed
    assert "codec" not in decode(encode_rollout(make_rollout(CARTPOLE), "lz4"))["frames"]


def test_uint8_frame_stack_1_empty_history_lz4():
    spec = dataclasses.replace(ATARI, frame_stack=1)
    r = make_rollout(spec)
    assert r.history.shape == (0, 8, 8)
    got = roundtrip(r, spec, "lz4")
    assert got.history.shape == (0, 8, 8)
    np.testing.assert_array_equal(got.frames, r.frames)


def test_weights_round_trip():
    state = make_state()
    msg = weights_msg(state)
    assert msg["version"] == 5 and msg["session"] == "s1"
    got = validate_weights(msg, EXPECTED, SPEC_HASH)
    assert set(got) == set(state)
    for name, a in state.items():
        assert got[name].dtype == a.dtype and got[name].shape == a.shape
        np.testing.assert_array_equal(got[name], a)


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int32", "int64", "float16", "float32", "bool"])
@pytest.mark.parametrize("codec", ["lz4", "none"])
def test_pack_array_round_trip_allowed_dtypes(dtype, codec):
    a = (np.arange(24).reshape(2, 3, 4) % 5).astype(dtype)
    got = unpack_array(
        msgpack.unpackb(msgpack.packb(pack_array(a, codec))), dtype=dtype, shape=(2, 3, 4)
    )
    np.testing.assert_array_equal(got, a)
    assert got.dtype == a.dtype


def test_pack_array_scalar_round_trip():
    a = np.array(3.5, np.float32)
    got = unpack_array(pack_array(a), dtype="float32", shape=())
    assert got.shape == () and got == a


def test_pack_array_non_contiguous():
    a = np.arange(20, dtype=np.int32).reshape(4, 5)[:, ::2]
    np.testing.assert_array_equal(unpack_array(pack_array(a, "lz4")), a)


@pytest.mark.parametrize("dtype", ["float64", "object", "int16", "complex64"])
def test_pack_array_rejects_other_dtypes(dtype):
    with pytest.raises(ProtocolError):
        pack_array(np.zeros(3, dtype=dtype))


# ---------------------------------------------------------------------------- envelope


@pytest.mark.parametrize("seed", range(20))
def test_random_bytes_rejected(seed):
    buf = np.random.default_rng(seed).integers(0, 256, 1 + 37 * seed, dtype=np.uint8).tobytes()
    with pytest.raises(ProtocolError):
        decode(buf)


@pytest.mark.parametrize(
    "buf",
    [b"", b"\xc1", b"\x81", b"\x92\x01"],
    ids=["empty", "never-used", "short-map", "short-array"],
)
def test_malformed_msgpack_rejected(buf):
    with pytest.raises(ProtocolError):
        decode(buf)


@pytest.mark.parametrize("doc", [[1, "rollout"], "rollout", 1, None, b"\x00"])
def test_not_a_map_rejected(doc):
    with pytest.raises(ProtocolError, match="map"):
        decode(msgpack.packb(doc, use_bin_type=True))


@pytest.mark.parametrize("v", [0, 1, 3, None, "2"])
def test_wrong_version_rejected(v):
    msg = {"kind": "hello"} if v is None else {"v": v, "kind": "hello"}
    with pytest.raises(ProtocolError, match="version"):
        decode(raw(msg))


@pytest.mark.parametrize("kind", ["goodbye", None, "", 3])
def test_unknown_kind_rejected(kind):
    msg = {"v": PROTOCOL_VERSION} if kind is None else {"v": PROTOCOL_VERSION, "kind": kind}
    with pytest.raises(ProtocolError, match="kind"):
        decode(raw(msg))
    with pytest.raises(ProtocolError):
        encode("goodbye")


def test_ext_type_rejected():
    buf = raw({"v": PROTOCOL_VERSION, "kind": "hello", "host": msgpack.ExtType(5, b"pickle?")})
    with pytest.raises(ProtocolError, match="ext"):
        decode(buf)


def test_version_must_be_an_int():
    with pytest.raises(ProtocolError):
        decode(msgpack.packb({"v": True, "kind": "hello"}))


def test_timestamp_ext_type_rejected():
    buf = msgpack.packb(
        {"v": PROTOCOL_VERSION, "kind": "hello", "host": msgpack.Timestamp(5, 0)}, datetime=False
    )
    with pytest.raises(ProtocolError):
        decode(buf)


def test_non_string_map_keys_rejected():
    with pytest.raises(ProtocolError):
        decode(raw({"v": PROTOCOL_VERSION, "kind": "hello", 7: 1}))


def test_oversize_message_rejected():
    buf = encode_rollout(make_rollout(ATARI), "none")
    assert decode(buf, max_bytes=len(buf))["kind"] == "rollout"
    with pytest.raises(ProtocolError, match="over the limit"):
        decode(buf, max_bytes=len(buf) - 1)


def test_truncated_message_rejected():
    for codec in ("lz4", "none"):
        buf = encode_rollout(make_rollout(ATARI), codec)
        for cut in (len(buf) // 2, len(buf) - 1, 1):
            with pytest.raises(ProtocolError):
                decode(buf[:cut])


# ---------------------------------------------------------------------------- arrays


@pytest.mark.parametrize("dtype", ["object", "float64", "int16", "O", "<f4", None, 7])
def test_dtype_not_in_allow_list(dtype):
    d = pack_array(np.zeros(3, np.float32))
    d["dtype"] = dtype
    with pytest.raises(ProtocolError, match="not allowed"):
        unpack_array(d)


@pytest.mark.parametrize("shape", [[3, -1], [1.5], "3", [True], [1 << 31], None])
def test_bad_shape_values(shape):
    d = pack_array(np.zeros(3, np.uint8))
    d["shape"] = shape
    with pytest.raises(ProtocolError):
        unpack_array(d)


def test_array_map_schema():
    d = pack_array(np.zeros(3, np.uint8))
    with pytest.raises(ProtocolError):
        unpack_array({**d, "pickle": b""})
    with pytest.raises(ProtocolError):
        unpack_array([d["dtype"], d["shape"], d["data"]])
    with pytest.raises(ProtocolError, match="bin"):
        unpack_array({**d, "data": "\x00\x00\x00"})
    with pytest.raises(ProtocolError, match="codec"):
        unpack_array({**d, "codec": "zstd"})


def test_array_shape_lies_about_bytes():
    d = pack_array(np.zeros((4, 4), np.float32))
    with pytest.raises(ProtocolError, match="bytes"):
        unpack_array({**d, "shape": [4, 5]})
    with pytest.raises(ProtocolError, match="bytes"):
        unpack_array({**d, "shape": [4, 3]})
    with pytest.raises(ProtocolError, match="bytes"):
        unpack_array({**d, "dtype": "int64"})  # same shape, itemsize 8


def test_array_truncated_data():
    d = pack_array(np.arange(10, dtype=np.int32))
    with pytest.raises(ProtocolError, match="bytes"):
        unpack_array({**d, "data": d["data"][:-1]})
    with pytest.raises(ProtocolError, match="bytes"):
        unpack_array({**d, "data": d["data"] + b"\x00"})


def test_array_size_limit():
    d = pack_array(np.zeros(100, np.float32))
    assert unpack_array(d, max_bytes=400).shape == (100,)
    with pytest.raises(ProtocolError, match="over the limit"):
        unpack_array(d, max_bytes=399)
    # a huge claimed shape is refused before any allocation or decompression
    with pytest.raises(ProtocolError, match="over the limit"):
        unpack_array({"dtype": "uint8", "shape": [1 << 30, 1 << 30], "data": b"", "codec": "lz4"})


def test_lz4_wrong_size_rejected():
    a = np.arange(64, dtype=np.uint8)
    d = pack_array(a, "lz4")
    # decompresses to fewer bytes than the shape says
    with pytest.raises(ProtocolError):
        unpack_array({**d, "shape": [65]})
    # decompresses to more bytes than the shape says
    with pytest.raises(ProtocolError):
        unpack_array({**d, "shape": [63]})
    # compressed data cut short, and garbage
    with pytest.raises(ProtocolError):
        unpack_array({**d, "data": d["data"][: len(d["data"]) // 2]})
    with pytest.raises(ProtocolError):
        unpack_array({**d, "data": b"\xff" * 20})
    # a block of another array's bytes
    other = lz4.block.compress(np.zeros(128, np.uint8).tobytes(), store_size=False)
    with pytest.raises(ProtocolError):
        unpack_array({**d, "data": other})


# ---------------------------------------------------------------------------- rollouts


def check_rejected(msg: dict, spec: RolloutSpec = ATARI, match: str | None = None, **kw) -> None:
    """Rejected as a decoded map and again after a trip through bytes."""
    with pytest.raises(ProtocolError, match=match):
        validate_rollout(msg, spec, latest_version=10, **kw)
    with pytest.raises(ProtocolError, match=match):
        validate_rollout(decode(raw(msg)), spec, latest_version=10, **kw)


def test_valid_message_passes_check_helper():
    # guard: the corruptions below start from a message that validates
    validate_rollout(decode(raw(rollout_msg())), ATARI, latest_version=10)
    validate_rollout(decode(raw(rollout_msg(CARTPOLE))), CARTPOLE, latest_version=10)


def test_rollout_wrong_frame_dtype():
    msg = rollout_msg()
    msg["frames"] = pack_array(np.zeros((T + 1, 8, 8), np.float32))
    check_rejected(msg, match="uint8")
    # uint8 images where float32 vectors were agreed
    msg = rollout_msg(CARTPOLE)
    msg["frames"] = pack_array(np.zeros((T + 1, 4), np.uint8))
    check_rejected(msg, CARTPOLE, match="float32")


@pytest.mark.parametrize(
    "name,dtype",
    [
        ("actions", np.int64),
        ("rewards", np.float16),
        ("behaviour_logp", np.int32),
        ("terminated", np.uint8),
        ("history", np.int8),
    ],
)
def test_rollout_wrong_field_dtype(name, dtype):
    msg = rollout_msg()
    arr = unpack_array(msg[name])
    msg[name] = pack_array(arr.astype(dtype))
    check_rejected(msg, match="agreed")


@pytest.mark.parametrize(
    "name,shape",
    [
        ("frames", (T, 8, 8)),
        ("frames", (T + 1, 8, 9)),
        ("history", (4, 8, 8)),
        ("history", (2, 8)),
        ("actions", (T + 1,)),
        ("rewards", (T, 1)),
        ("truncated", (T - 1,)),
    ],
)
def test_rollout_wrong_shape(name, shape):
    msg = rollout_msg()
    dtype = unpack_array(msg[name]).dtype
    msg[name] = pack_array(np.zeros(shape, dtype))
    check_rejected(msg, match="agreed")


def test_rollout_shape_lies_about_bytes():
    # the agreed shape, but fewer (or more) bytes than it needs
    msg = decode(encode_rollout(make_rollout(ATARI), "none"))
    msg["frames"] = {**msg["frames"], "data": msg["frames"]["data"][:-1]}
    check_rejected(msg, match="bytes")
    msg = rollout_msg()
    msg["rewards"] = {**msg["rewards"], "data": msg["rewards"]["data"][:-4]}
    check_rejected(msg, match="bytes")
    msg = rollout_msg()
    msg["actions"] = {**msg["actions"], "data": msg["actions"]["data"] + b"\0\0\0\0"}
    check_rejected(msg, match="bytes")


def test_rollout_lz4_frames_wrong_size():
    msg = rollout_msg()
    assert msg["frames"]["codec"] == "lz4"
    small = lz4.block.compress(np.zeros((T, 8, 8), np.uint8).tobytes(), store_size=False)
    msg["frames"] = {**msg["frames"], "data": small}
    check_rejected(msg)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_rollout_non_finite_reward(bad):
    rewards = np.zeros(T, np.float32)
    rewards[3] = bad
    check_rejected(rollout_msg(rewards=rewards), match="rewards")


@pytest.mark.parametrize("bad", [np.nan, np.inf, 0.5])
def test_rollout_bad_logp(bad):
    logp = np.full(T, -0.5, np.float32)
    logp[0] = bad
    check_rejected(rollout_msg(behaviour_logp=logp), match="behaviour_logp")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_rollout_non_finite_vector_observation(bad):
    r = make_rollout(CARTPOLE)
    r.frames[T, 2] = bad
    check_rejected(decode(encode_rollout(r)), CARTPOLE, match="finite")


@pytest.mark.parametrize("bad", [-1, 5, 1 << 30])
def test_rollout_actions_out_of_range(bad):
    actions = np.zeros(T, np.int32)
    actions[-1] = bad
    check_rejected(rollout_msg(actions=actions), match="actions")


def test_rollout_actions_at_edges_accepted():
    actions = np.array([0, 4, 0, 4, 4, 0], np.int32)
    got = validate_rollout(rollout_msg(actions=actions), ATARI, latest_version=10)
    np.testing.assert_array_equal(got.actions, actions)


def test_rollout_policy_version():
    assert (
        validate_rollout(rollout_msg(policy_version=10), ATARI, latest_version=10).policy_version
        == 10
    )
    check_rejected(rollout_msg(policy_version=11), match="policy_version")
    check_rejected(rollout_msg(policy_version=-1), match="policy_version")


@pytest.mark.parametrize("value", [-1, -(1 << 40), 1.0, True, "3", None, (1 << 31) + 1])
def test_rollout_bad_actor_id(value):
    msg = rollout_msg()
    msg["actor_id"] = value
    check_rejected(msg, match="actor_id")


@pytest.mark.parametrize("field", ["actor_id", "frames", "history", "episodes", "truncated", "v"])
def test_rollout_missing_field(field):
    msg = rollout_msg()
    del msg[field]
    with pytest.raises(ProtocolError):
        validate_rollout(msg, ATARI, latest_version=10)


def test_rollout_extra_field():
    msg = rollout_msg()
    msg["values"] = pack_array(np.zeros(T, np.float32))
    check_rejected(msg, match="schema")


def test_rollout_wrong_kind():
    msg = rollout_msg()
    msg["kind"] = "weights"
    with pytest.raises(ProtocolError, match="rollout"):
        validate_rollout(msg, ATARI, latest_version=10)


@pytest.mark.parametrize(
    "episode",
    [
        {"return": math.nan, "length": 3, "frames": 12},
        {"return": math.inf, "length": 3, "frames": 12},
        {"return": 1.0, "length": math.nan, "frames": 12},
        {"return": "1.0", "length": 3, "frames": 12},
        {"return": True, "length": 3, "frames": 12},
        {"return": 1.0, "length": 3},
        {"return": 1.0, "length": 3, "frames": 12, "x": 0},
        [1.0, 3, 12],
    ],
)
def test_rollout_bad_episode(episode):
    check_rejected(rollout_msg(episodes=[episode]))


def test_rollout_too_many_episodes():
    ep = {"return": 0.0, "length": 1, "frames": 1}
    assert (
        len(validate_rollout(rollout_msg(episodes=[ep] * T), ATARI, latest_version=10).episodes)
        == T
    )
    check_rejected(rollout_msg(episodes=[ep] * (T + 1)), match="episodes")
    msg = rollout_msg()
    msg["episodes"] = {"return": 0.0}
    check_rejected(msg, match="episodes")


def test_rollout_array_size_limit():
    msg = rollout_msg()
    with pytest.raises(ProtocolError, match="over the limit"):
        validate_rollout(msg, ATARI, latest_version=10, max_bytes=(T + 1) * 64 - 1)
    validate_rollout(msg, ATARI, latest_version=10, max_bytes=(T + 1) * 64)


# ---------------------------------------------------------------------------- weights


def test_weights_other_spec_hash():
    with pytest.raises(ProtocolError, match="spec"):
        validate_weights(weights_msg(spec_hash="other"), EXPECTED, SPEC_HASH)
    msg = weights_msg()
    del msg["spec_hash"]
    with pytest.raises(ProtocolError, match="spec"):
        validate_weights(msg, EXPECTED, SPEC_HASH)


def test_weights_missing_or_extra_parameter():
    state = make_state()
    del state["b"]
    with pytest.raises(ProtocolError, match="parameters"):
        validate_weights(weights_msg(state), EXPECTED, SPEC_HASH)
    state = {**make_state(), "extra": np.zeros(2, np.float32)}
    with pytest.raises(ProtocolError, match="parameters"):
        validate_weights(weights_msg(state), EXPECTED, SPEC_HASH)


@pytest.mark.parametrize(
    "name,value",
    [
        ("w", np.zeros((4, 3), np.float32)),
        ("w", np.zeros((3, 4, 1), np.float32)),
        ("b", np.zeros(5, np.float32)),
        ("steps", np.zeros(2, np.int64)),
        ("w", np.zeros((3, 4), np.float16)),
        ("steps", np.array([1], np.int32)),
    ],
)
def test_weights_wrong_shape_or_dtype(name, value):
    state = {**make_state(), name: value}
    with pytest.raises(ProtocolError, match="agreed"):
        validate_weights(weights_msg(state), EXPECTED, SPEC_HASH)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_weights_non_finite(bad):
    state = make_state()
    state["w"][1, 2] = bad
    with pytest.raises(ProtocolError, match="finite"):
        validate_weights(weights_msg(state), EXPECTED, SPEC_HASH)


@pytest.mark.parametrize("version", [-1, 1.0, None, "5"])
def test_weights_bad_version(version):
    msg = weights_msg()
    msg["version"] = version
    with pytest.raises(ProtocolError, match="version"):
        validate_weights(msg, EXPECTED, SPEC_HASH)


def test_weights_wrong_kind_and_params_type():
    msg = weights_msg()
    with pytest.raises(ProtocolError, match="weights"):
        validate_weights({**msg, "kind": "rollout"}, EXPECTED, SPEC_HASH)
    with pytest.raises(ProtocolError):
        validate_weights({**msg, "params": [1, 2, 3]}, EXPECTED, SPEC_HASH)
    buf = encode_weights(make_state(), version=5, spec_hash=SPEC_HASH, session="s1")
    with pytest.raises(ProtocolError):
        decode(buf[: len(buf) // 2])


# ---------------------------------------------------------------------------- bounds of a real actor


def test_logp_bounds_are_those_of_a_real_actor():
    """Actors floor probabilities at PROB_FLOOR: anything below its log is poison (issue 8.1)."""
    at_floor = np.full(T, LOGP_FLOOR, np.float32)
    got = validate_rollout(rollout_msg(behaviour_logp=at_floor), ATARI, latest_version=10)
    assert got.behaviour_logp.min() == np.float32(LOGP_FLOOR)
    for bad in (-1e30, -70.0, LOGP_FLOOR - 0.01):
        logp = np.full(T, -0.5, np.float32)
        logp[2] = bad
        check_rejected(rollout_msg(behaviour_logp=logp), match="behaviour_logp")


@pytest.mark.parametrize("bad", [3e38, -3e38, 1e6 * 1.001])
def test_rewards_beyond_max_abs_reward_rejected(bad):
    rewards = np.zeros(T, np.float32)
    rewards[1] = bad
    check_rejected(rollout_msg(rewards=rewards), match="max-abs-reward")


def test_rewards_at_the_bound_accepted_and_bound_follows_the_spec():
    rewards = np.array([1e6, -1e6, 0, 1, -1, 5], np.float32)
    validate_rollout(rollout_msg(rewards=rewards), ATARI, latest_version=10)
    tight = dataclasses.replace(ATARI, max_abs_reward=1.0)
    check_rejected(rollout_msg(rewards=rewards), tight, match="max-abs-reward")


@pytest.mark.parametrize("bad", [1e7, -1e30, 3e38])
def test_float_observations_beyond_the_bound_rejected(bad):
    assert bad < -MAX_ABS_OBSERVATION or bad > MAX_ABS_OBSERVATION
    r = make_rollout(CARTPOLE)
    r.frames[1, 0] = bad
    check_rejected(decode(encode_rollout(r)), CARTPOLE, match="within")
    r = make_rollout(CARTPOLE)
    r.frames[1, 0] = MAX_ABS_OBSERVATION
    validate_rollout(decode(encode_rollout(r)), CARTPOLE, latest_version=10)


def test_float_history_is_checked_too():
    spec = dataclasses.replace(CARTPOLE, frame_stack=2)
    r = make_rollout(spec)
    r.history[0, 1] = np.nan
    check_rejected(decode(encode_rollout(r)), spec, match="history")


@pytest.mark.parametrize("field,value", [("length", 3.0), ("length", 0), ("length", True),
                                         ("frames", -12), ("frames", 12.5)])
def test_episode_counts_are_positive_ints(field, value):
    ep = {"return": 1.0, "length": 3, "frames": 12, field: value}
    check_rejected(rollout_msg(episodes=[ep]), match="episode")


# ---------------------------------------------------------------------------- decoding is bounded


def test_envelope_is_read_before_the_body():
    """v and kind open every message and are checked before the body is walked (issue 8.5)."""
    body = [[]] * 60_000  # would be 60,000 objects to build
    with pytest.raises(ProtocolError, match="version"):
        decode(raw({"v": 1, "kind": "rollout", "junk": body}))
    with pytest.raises(ProtocolError, match="not taken here"):
        decode(raw({"v": PROTOCOL_VERSION, "kind": "weights", "junk": body}),
               kinds={"rollout": ATARI.limits})
    with pytest.raises(ProtocolError, match="version"):  # v must come first
        decode(raw({"kind": "rollout", "v": PROTOCOL_VERSION}))


def test_object_bomb_is_refused_by_count():
    """A small message of many empty containers: refused after the budget, not built whole."""
    bomb = msgpack.packb({"v": PROTOCOL_VERSION, "kind": "rollout", "episodes": [[]] * 60_000})
    assert len(bomb) < 70_000
    with pytest.raises(ProtocolError, match="max_array_len|maps and arrays|msgpack"):
        decode(bomb, kinds={"rollout": ATARI.limits})
    nested = {"v": PROTOCOL_VERSION, "kind": "rollout", "episodes": [[[[]] * 8] * 8] * T}
    with pytest.raises(ProtocolError, match="maps and arrays"):
        decode(raw(nested), kinds={"rollout": ATARI.limits})
    # within the spec's limits: a real rollout with T episodes decodes
    eps = [{"return": 0.0, "length": 1, "frames": 4}] * T
    assert decode(encode_rollout(make_rollout(ATARI, episodes=eps)), kinds={"rollout": ATARI.limits})


def test_control_messages_are_flat():
    from common.protocol import CONTROL_LIMITS

    hello = encode("hello", host="h", pid=1, previous_id=None)
    assert decode(hello, kinds={"hello": CONTROL_LIMITS})["host"] == "h"
    with pytest.raises(ProtocolError):
        decode(encode("hello", host=["h"] * 3, pid=1), kinds={"hello": CONTROL_LIMITS})
    with pytest.raises(ProtocolError):
        decode(encode("hello", host="h" * 1000, pid=1), kinds={"hello": CONTROL_LIMITS})


def test_rollout_message_limit_covers_a_real_rollout():
    eps = [{"return": -1e6 * 1000, "length": 100_000, "frames": 400_000}] * T
    r = make_rollout(ATARI, episodes=eps, frames=np.random.default_rng(0).integers(0, 256, (T + 1, 8, 8), np.uint8))
    assert len(encode_rollout(r, "lz4", token="f" * 32)) <= ATARI.max_message_bytes
    assert len(encode_rollout(r, "none", token="f" * 32)) <= ATARI.max_message_bytes


def test_final_frames_one_per_step_cut_by_a_time_limit():
    """Issue 8.13: the observation a time limit hid travels with the rollout, once per step
    that is truncated and not terminated."""
    msg = rollout_msg()
    both = rollout_msg(terminated=np.ones(T, bool), truncated=np.ones(T, bool), final_frames=None,
                       episodes=[{"return": 0.0, "length": 1, "frames": 4}] * T)
    assert validate_rollout(both, ATARI, latest_version=10).final_frames.shape == (0, 8, 8)
    msg["final_frames"] = pack_array(np.zeros((0, 8, 8), np.uint8))  # the one it owes is missing
    check_rejected(msg, match="agreed")
    msg["final_frames"] = pack_array(np.zeros((2, 8, 8), np.uint8))
    check_rejected(msg, match="agreed")
    r = make_rollout(CARTPOLE)
    r.final_frames[0, 0] = np.inf
    check_rejected(decode(encode_rollout(r)), CARTPOLE, match="final observations")
