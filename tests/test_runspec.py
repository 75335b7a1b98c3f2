"""The run spec (common/runspec.py): built once from the config, sent in the welcome, read back
by attribute on the actor side, and a hostile but well-formed welcome refused with one line."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest

from common import protocol
from common.config import Config
from common.model import build_model, spec_hash
from common.protocol import ProtocolError
from common.runspec import RunSpec


def over_the_wire(spec: RunSpec) -> RunSpec:
    """Encode the spec in a welcome, decode the message, parse it as an actor does."""
    buf = protocol.encode("welcome", actor_id=0, seed=1, epsilon=0.0, session="s", token="t", settings=spec.to_wire())
    return RunSpec.from_wire(protocol.decode(buf)["settings"])


@pytest.mark.parametrize("env", ["CartPole-v1", "Airstriker-Genesis-v0", "connectx", "ALE/Pong-v5"])
def test_round_trips_over_the_wire(env):
    spec = RunSpec.from_config(Config(env=env, unroll_length=24, mode="sync", sync_timeout=3.0))
    got = over_the_wire(spec)
    assert got == spec
    assert got.rollout == spec.rollout and got.rollout_bytes == spec.rollout_bytes
    assert spec_hash(got.model.as_dict()) == spec_hash(spec.model.as_dict()), "the weights' hash agrees"


def test_what_the_config_says_is_read_by_attribute():
    cfg = Config(env="Airstriker-Genesis-v0", frame_skip=3, frame_size=64, unroll_length=20, clip_rewards=True,
                 max_episode_steps=1000, max_message_mb=8, publish_interval=1.5)
    s = over_the_wire(RunSpec.from_config(cfg))
    assert (s.env.id, s.env.frame_skip, s.env.max_episode_steps) == ("Airstriker-Genesis-v0", 3, 1000)
    assert (s.preprocessing.frame_size, s.preprocessing.clip_rewards) == (64, True)
    assert (s.model.kind, s.model.frame_shape, s.model.frame_stack) == ("nature_cnn", (64, 64), 4)
    assert s.unroll_length == 20 and s.mode == "async" and s.publish_interval == 1.5
    assert s.max_message_bytes == 8 << 20
    assert s.env_kwargs == {"frame_skip": 3, "max_episode_steps": 1000, "clip_rewards": True, "frame_size": 64,
                            "action_set": "default"}
    r = s.rollout
    assert (r.frame_shape, r.frame_dtype, r.frame_skip, r.max_episode_steps) == ((64, 64), "uint8", 3, 1000)
    assert not s.bounds.episode_extras and not s.bounds.action_mask


def test_gym_envs_skip_no_frames_and_keep_their_registered_limit():
    s = RunSpec.from_config(Config(env="CartPole-v1", frame_skip=4))
    assert s.env.frame_skip == 1 and s.env.max_episode_steps is None
    assert s.bounds.episode_step_limit == 500 and s.bounds.frame_dtype == "float32"
    assert s.model.kind == "mlp" and s.model.option("hidden") == Config().hidden_size


def test_two_player_games_say_so_in_generic_fields_and_their_model_builds():
    s = over_the_wire(RunSpec.from_config(Config(env="connectx", board_channels=8, board_blocks=1)))
    assert s.bounds.episode_extras and s.bounds.action_mask and s.rollout.action_mask
    assert s.rollout.episode_extras == s.bounds.episode_extras
    assert (s.model.option("channels"), s.model.option("blocks")) == (8, 1)
    build_model(s.model.as_dict())  # the options the actor got are the ones the model needs


def test_the_learner_builds_it_once_and_sends_it():
    import learner.server as server

    calls = []
    real = RunSpec.from_config

    def counting(cfg: Config) -> RunSpec:
        calls.append(cfg)
        return real(cfg)

    mp = pytest.MonkeyPatch()
    mp.setattr(RunSpec, "from_config", staticmethod(counting))
    try:
        assert server.actor_settings(Config(env="CartPole-v1")) == real(Config(env="CartPole-v1")).to_wire()
    finally:
        mp.undo()
    assert len(calls) == 1


def _set(d: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    d = copy.deepcopy(d)
    *parents, last = path.split(".")
    node = d
    for p in parents:
        node = node[p]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return d


_DELETE = object()
HOSTILE = [
    ("env.id", "../../etc/passwd"),
    ("env.id", "x" * 500),
    ("env.id", 7),
    ("env.frame_skip", 0),
    ("env.frame_skip", 10**9),
    ("env.frame_skip", True),  # a bool is not an int here
    ("env.frame_skip", 4.0),
    ("env.max_episode_steps", -1),
    ("env.action_set", "import os"),
    ("preprocessing.frame_size", 1 << 20),
    ("preprocessing.clip_rewards", 1),
    ("model.kind", "Nature CNN; rm"),
    ("model.frame_shape", [1 << 15, 1 << 15]),
    ("model.frame_shape", [4096, 4096, 4]),  # each dimension fine, the frame 64 M elements
    ("model.frame_shape", []),
    ("model.frame_shape", "84x84"),
    ("model.frame_stack", 0),
    ("model.n_actions", 1 << 20),
    ("model.hidden", 1 << 40),
    ("model.hidden", [64]),
    ("model.hidden", math.nan),
    ("model.Evil Key", 1),
    ("model.n_actions", _DELETE),
    ("unroll_length", 0),
    ("unroll_length", 1 << 30),
    ("bounds.frame_dtype", "object"),
    ("bounds.max_abs_reward", math.inf),
    ("bounds.max_abs_reward", -1.0),
    ("bounds.episode_extras", "Two Player!"),
    ("bounds.episode_extras", True),
    ("mode", "turbo"),
    ("max_message_bytes", 1 << 40),
    ("max_message_bytes", 0),
    ("publish_interval", math.nan),
    ("publish_interval", 0),
    ("sync_timeout", -5.0),
    ("sync_timeout", _DELETE),
    ("extra_field", 1),
    ("env.extra", 1),
]


@pytest.mark.parametrize("path,value", HOSTILE, ids=[f"{p}={v!r:.20}" for p, v in HOSTILE])
def test_hostile_well_formed_values_are_refused_with_one_line(path, value):
    wire = RunSpec.from_config(Config(env="CartPole-v1")).to_wire()
    bad = _set(wire, path, value)
    buf = protocol.encode("welcome", actor_id=0, seed=1, epsilon=0.0, session="s", token="t", settings=bad)
    with pytest.raises(ProtocolError, match=r"^run spec: ") as info:
        RunSpec.from_wire(protocol.decode(buf)["settings"])
    assert "\n" not in str(info.value) and len(str(info.value)) < 300


@pytest.mark.parametrize("settings", [None, [], "CartPole-v1", {"env": "CartPole-v1"}])
def test_settings_that_are_not_a_spec_are_refused(settings):
    with pytest.raises(ProtocolError, match=r"^run spec: "):
        RunSpec.from_wire(settings)


def test_the_actor_link_parses_the_welcome_into_a_spec():
    from actor.link import Welcome

    spec = RunSpec.from_config(Config(env="CartPole-v1"))
    msg = protocol.decode(protocol.encode("welcome", actor_id=3, seed=9, epsilon=0.1, session="s", token="t",
                                          settings=spec.to_wire()))
    w = Welcome.from_message(msg)
    assert isinstance(w.settings, RunSpec) and w.settings == spec and w.settings.env.id == "CartPole-v1"
    msg["settings"]["mode"] = "turbo"
    with pytest.raises(ProtocolError, match="mode"):
        Welcome.from_message(msg)


def test_a_recurrent_model_round_trips_with_its_state_bounds():
    s = over_the_wire(RunSpec.from_config(Config(env="CartPole-v1", model="lstm", lstm_hidden=16)))
    assert s.model.kind == "lstm" and s.model.option("encoder") == "mlp" and s.model.option("lstm_hidden") == 16
    assert s.rollout.state_shape == (2, 16) and len(s.rollout.state_bound) == 2
    build_model(s.model.as_dict())


def test_a_familys_own_settings_and_lives_travel_too():
    s = over_the_wire(RunSpec.from_config(Config(env="ALE/Pong-v5", repeat_action_probability=0.0)))
    assert dict(s.env.extra) == {"repeat_action_probability": 0.0} and s.env_kwargs["repeat_action_probability"] == 0.0
    assert s.bounds.lives and s.rollout.lives
    wire = s.to_wire()
    wire["env"]["extra"]["repeat_action_probability"] = math.inf
    with pytest.raises(ProtocolError, match="env.extra"):
        RunSpec.from_wire(wire)


def test_adaptive_exploration_travels_and_its_arms_are_checked():
    s = over_the_wire(RunSpec.from_config(Config(env="CartPole-v1", exploration="adaptive")))
    assert s.exploration is not None and s.exploration.arms == Config(exploration="adaptive").arms()
    assert s.rollout.n_arms == len(s.exploration.arms)
    assert RunSpec.from_config(Config(env="CartPole-v1")).exploration is None
    for bad in ([], [1.5], ["0.1"], [math.nan]):
        wire = s.to_wire()
        wire["exploration"]["arms"] = bad
        with pytest.raises(ProtocolError, match="exploration.arms"):
            RunSpec.from_wire(wire)
