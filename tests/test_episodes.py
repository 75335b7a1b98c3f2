"""Episode statistics are checked against the rollouts that carry them (issue 8.2)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from common.protocol import ProtocolError, Rollout, RolloutSpec
from learner.episodes import EpisodeBook

T = 8
SPEC = RolloutSpec(T, (4,), "float32", 1, 2, frame_skip=4, max_abs_reward=10.0, max_episode_steps=20)


def rollout(dones=(), rewards=None, episodes=None, actor_id=0) -> Rollout:
    done = np.zeros(T, bool)
    done[list(dones)] = True
    rewards = np.ones(T, np.float32) if rewards is None else np.asarray(rewards, np.float32)
    return Rollout(actor_id, 0, np.zeros((T + 1, 4), np.float32), np.zeros((0, 4), np.float32),
                   np.zeros(T, np.int32), np.zeros(T, np.float32), rewards, done,
                   np.zeros(T, bool), [] if episodes is None else episodes)


def ep(ret: float, length: int, frames: int | None = None) -> dict:
    return {"return": ret, "length": length, "frames": 4 * length if frames is None else frames}


@pytest.fixture
def book() -> EpisodeBook:
    b = EpisodeBook(SPEC, rewards_are_returns=True)
    b.start(0, fresh=True)
    return b


def test_honest_episodes_across_rollouts_are_verified(book):
    assert book.check(rollout()) == []  # 8 steps of an episode, no end yet
    got = book.check(rollout(dones=[2, 6], episodes=[ep(11.0, 11), ep(4.0, 4)]))
    assert [(e.ret, e.length, e.verified) for e in got] == [(11.0, 11, True), (4.0, 4, True)]
    got = book.check(rollout(dones=[0], episodes=[ep(2.0, 2)]))  # step 7 of the last one, then 0
    assert got[0].verified


@pytest.mark.parametrize("dones,episodes,match", [
    ([3], [], "1 done"),  # a done flag without its episode
    ([], [ep(4.0, 4)], "0 done"),  # an episode without a done flag
    ([3], [ep(4.0, 4, frames=5)], "frame skip"),
    ([3], [ep(4.0, 3)], "does not fit"),  # shorter than the steps that arrived
    ([1, 5], [ep(2.0, 2), ep(9.0, 9)], "does not fit"),  # two ends in one rollout: exactly 4 steps
    ([3], [ep(1e30, 4)], "max-abs-reward"),
    ([3], [ep(float("inf"), 4)], "max-abs-reward"),
    ([1, 5], [ep(2.0, 2), ep(5.0, 4)], "sum of its rewards"),  # wholly inside: the return is known
    ([3], [ep(4.0, 21)], "time limit"),
])
def test_episode_that_does_not_fit_its_rollout_is_rejected(book, dones, episodes, match):
    with pytest.raises(ProtocolError, match=match):
        book.check(rollout(dones=dones, episodes=episodes))
    assert book.tracks[0].steps == 0, "a rejected rollout leaves the account as it was"


def test_episode_not_seen_whole_counts_but_is_not_verified(book):
    book.start(1, fresh=False)  # rejoined mid-episode: its start is unknown
    got = book.check(rollout(dones=[3], episodes=[ep(90.0, 15)], actor_id=1))
    assert not got[0].verified
    with pytest.raises(ProtocolError, match="max-abs-reward"):  # still bounded: 10 x length
        book.check(rollout(dones=[3], episodes=[ep(200.0, 15)], actor_id=1))
    # a rollout lost in flight: the episode is longer than what arrived; counted, not verified
    book.check(rollout())
    got = book.check(rollout(dones=[1], episodes=[ep(18.0, 18)]))
    assert not got[0].verified
    # and from the next done on, everything is seen again
    assert book.check(rollout(dones=[7], episodes=[ep(14.0, 14)]))[0].verified


def test_a_lie_the_learner_cannot_prove_is_kept_out_of_the_mean(book):
    got = book.check(rollout(dones=[3], episodes=[ep(5.0, 4)]))  # 4 rewards of 1 were sent
    assert not got[0].verified


def test_a_lost_rollout_with_a_done_inside_is_not_taken_for_a_lie(book):
    book.check(rollout())  # 8 steps of episode 1 arrive
    # lost in flight: 8 steps in which episode 1 ends at step 2 and episode 2 begins
    got = book.check(rollout(dones=[1], episodes=[ep(7.0, 7)]))  # 5 lost + 2 here, < 8 + 2 seen
    assert not got[0].verified
    assert book.check(rollout(dones=[7], episodes=[ep(14.0, 14)]))[0].verified


def test_clipped_rewards_bound_the_return_but_do_not_fix_it():
    book = EpisodeBook(SPEC, rewards_are_returns=False)
    book.start(0, fresh=True)
    assert book.check(rollout(dones=[3], episodes=[ep(37.5, 4)]))[0].verified
    with pytest.raises(ProtocolError, match="max-abs-reward"):
        book.check(rollout(dones=[3], episodes=[ep(81.0, 8)]))  # 4 steps left + 4 = 8


def test_no_time_limit_means_no_length_cap():
    book = EpisodeBook(dataclasses.replace(SPEC, max_episode_steps=None), rewards_are_returns=False)
    book.start(0, fresh=False)
    assert not book.check(rollout(dones=[3], episodes=[ep(1.0, 100_000)]))[0].verified
