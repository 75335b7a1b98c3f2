"""Two-player rollouts (action masks, opponent/seat/result) and the league and snapshot messages:
strict validation, well-formed poison refused."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from actor.rollout import RolloutCollector
from common import protocol
from common.connectx import messages
from common.envs import env_signature, make_env
from common.model import board_spec, build_model, expected_params, spec_hash, state_to_numpy
from common.protocol import IllegalAction, ProtocolError, RolloutSpec
from learner.episodes import EpisodeBook

SIG = env_signature("connectx")
MODEL = board_spec(SIG.obs_shape, SIG.n_actions, 32, 0, 0)
T = 24
SPEC = RolloutSpec(T, SIG.obs_shape, SIG.obs_dtype, 1, SIG.n_actions, action_mask=True,
                   episode_extras=messages.EPISODE_EXTRAS)


def rollout(seed: int = 0):
    torch.manual_seed(seed)
    collector = RolloutCollector(make_env("connectx", seed=seed), actor_id=0, seed=seed, unroll_length=T,
                                 frame_stack=1)
    return collector.collect(build_model(MODEL).eval(), 0)


def roundtrip(r, **overrides):
    msg = protocol.decode(protocol.encode_rollout(r))
    msg.update(overrides)
    return protocol.validate_rollout(msg, SPEC, latest_version=0)


def test_connectx_rollouts_carry_masks_and_game_results():
    r = rollout()
    assert SIG.action_mask and SIG.episode_extras and r.action_mask.shape == (T, 7)
    assert r.action_mask[np.arange(T), r.actions].all()  # the actor only plays legal columns
    assert r.episodes and all(set(ep) == {"return", "length", "frames", "opponent", "seat", "result"}
                              for ep in r.episodes)
    back = roundtrip(r)
    assert np.array_equal(back.action_mask, r.action_mask) and back.episodes == r.episodes
    ends = np.flatnonzero(r.terminated)
    assert [ep["result"] for ep in r.episodes] == [int(r.rewards[t]) for t in ends]


def test_fields_the_spec_does_not_expect_are_refused():
    r = rollout()
    plain = RolloutSpec(T, SIG.obs_shape, SIG.obs_dtype, 1, SIG.n_actions)  # no masks, one player
    with pytest.raises(ProtocolError, match="schema"):
        protocol.validate_rollout(protocol.decode(protocol.encode_rollout(r)), plain, latest_version=0)
    r.action_mask = None
    with pytest.raises(ProtocolError, match="schema"):  # a masked env's rollout without its mask
        roundtrip(r)


def test_an_action_its_own_mask_forbids_is_an_illegal_move():
    r = rollout()
    t = 3
    r.action_mask[t] = False
    r.action_mask[t, (r.actions[t] + 1) % 7] = True
    with pytest.raises(IllegalAction):
        roundtrip(r)


@pytest.mark.parametrize("field, value", [
    ("opponent", "../../etc/passwd"), ("opponent", "x" * 5000), ("opponent", 7), ("seat", 2), ("seat", 5),
    ("seat", True), ("seat", -1), ("result", 2), ("result", 7), ("result", 0.5), ("result", "win"),
])
def test_poisoned_episode_fields_are_refused(field, value):
    r = rollout()
    r.episodes[0][field] = value
    with pytest.raises(ProtocolError):
        roundtrip(r)


def test_a_result_that_contradicts_the_rewards_is_refused():
    """A game's result is its return, and its return the sum of the rewards the learner got."""
    r = rollout()
    assert len(r.episodes) >= 2
    book = EpisodeBook(dataclasses.replace(SPEC, max_episode_steps=21), rewards_are_returns=True)
    book.start(0, fresh=True)
    for i, ep in enumerate(r.episodes):
        flipped = 1 if ep["result"] != 1 else -1
        lie = [dict(e) for e in r.episodes]
        lie[i]["result"] = flipped  # the result alone
        with pytest.raises(ProtocolError, match="result"):
            book.check(dataclasses.replace(r, episodes=lie))
        lie[i]["return"] = float(flipped)  # result and return together: not the rewards
        if i == 0:  # the first game may have begun in an earlier rollout: counted, not verified
            assert not book.check(dataclasses.replace(r, episodes=lie))[0].verified
            book.start(0, fresh=True)
        else:
            with pytest.raises(ProtocolError, match="sum of its rewards"):
                book.check(dataclasses.replace(r, episodes=lie))
    assert all(e.verified for e in book.check(r))


def test_a_mask_with_no_legal_action_is_refused():
    r = rollout()
    r.action_mask[5] = False
    with pytest.raises(ProtocolError, match="no legal action"):
        roundtrip(r)
    r.action_mask[:] = False
    with pytest.raises(ProtocolError, match="no legal action"):
        roundtrip(r)


@pytest.mark.parametrize("mask", [np.ones((T, 6), bool), np.ones((T + 1, 7), bool), np.ones(T * 7, bool),
                                  np.ones((T, 7), np.uint8)])
def test_a_mask_of_another_shape_or_dtype_is_refused(mask):
    with pytest.raises(ProtocolError, match="shape|dtype"):
        roundtrip(rollout(), action_mask=protocol.pack_array(mask))


def test_league_messages():
    good = {"self": 0.1, "negamax": 0.5, "snap3": 0.4}
    msg = protocol.decode(messages.encode_league(good, session="s"))
    assert messages.validate_league(msg) == pytest.approx(good)
    for weights in ({"alphazero": 1.0}, {"self": 0.5}, {"self": float("nan"), "random": 1.0},
                    {"self": -0.5, "random": 1.5}, {f"snap{i}": 1 / 100 for i in range(100)}, {}):
        with pytest.raises(ProtocolError):
            messages.validate_league(protocol.decode(messages.encode_league(weights, session="s")))


def test_snapshot_messages():
    net = build_model(MODEL)
    state, expected, h = state_to_numpy(net), expected_params(net), spec_hash(MODEL)
    msg = protocol.decode(messages.encode_snapshot("snap2", state, spec_hash=h, session="s"))
    name, got = messages.validate_snapshot(msg, expected, h)
    assert name == "snap2" and all(np.array_equal(got[k], v) for k, v in state.items())
    with pytest.raises(ProtocolError, match="snapK"):
        messages.validate_snapshot(protocol.decode(messages.encode_snapshot("negamax", state, spec_hash=h,
                                                                            session="s")), expected, h)
    with pytest.raises(ProtocolError, match="model spec"):
        messages.validate_snapshot(msg, expected, "other")
    bad = dict(state)
    first = next(iter(bad))
    bad[first] = np.full_like(bad[first], np.inf)
    with pytest.raises(ProtocolError, match="finite"):
        messages.validate_snapshot(protocol.decode(messages.encode_snapshot("snap1", bad, spec_hash=h, session="s")),
                                   expected, h)
