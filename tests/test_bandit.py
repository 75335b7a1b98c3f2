"""--exploration adaptive: the sliding-window UCB bandit (stationary, switching, seeded), the arm
an actor records per episode, and the arm's bounds through a real learner's sockets."""

from __future__ import annotations

import numpy as np
import pytest

from actor.exploration import AdaptiveEpsilon
from actor.rollout import RolloutBuilder
from common.bandit import SlidingWindowUCB
from common.config import Config, ConfigError
from learner.arm_stats import ArmStats, arms_console
from tests.conftest import CARTPOLE, cartpole_rollout, free_base_port, last_metrics, wait_for
from tests.scripted import ScriptedActor

WINDOW = 90
BONUS = 0.3


def play(bandit: SlidingWindowUCB, returns: np.ndarray, episodes: int, rng: np.random.Generator) -> list[int]:
    """A synthetic game whose return depends only on the arm (plus a little noise)."""
    pulls = []
    for _ in range(episodes):
        arm = bandit.select()
        bandit.update(arm, returns[arm] + rng.normal())
        pulls.append(arm)
    return pulls


def game(best: int) -> np.ndarray:
    returns = np.linspace(0.0, 60.0, 9)
    returns[best] = 100.0
    return returns


@pytest.mark.parametrize("seed", range(5))
def test_stationary_most_pulls_go_to_the_best_arm_after_200_episodes(seed: int) -> None:
    bandit, rng = SlidingWindowUCB(9, window=WINDOW, bonus=BONUS, seed=seed), np.random.default_rng(seed)
    play(bandit, game(3), 200, rng)
    after = play(bandit, game(3), 200, rng)
    assert np.mean(np.array(after) == 3) >= 0.8


@pytest.mark.parametrize("seed", range(5))
def test_switching_it_moves_to_the_new_best_arm_within_one_window(seed: int) -> None:
    bandit, rng = SlidingWindowUCB(9, window=WINDOW, bonus=BONUS, seed=seed), np.random.default_rng(seed)
    play(bandit, game(3), 200, rng)
    within = play(bandit, game(7), WINDOW, rng)  # arm 3 falls back, arm 7 becomes the best
    late = np.array(within[-WINDOW // 3:])
    assert np.mean(late == 7) >= 0.7 and np.mean(late == 3) < 0.2


def test_returns_rising_with_learning_do_not_favour_the_arms_pulled_late() -> None:
    """Every return rises by 5 an episode (the policy learns) and arm 0 gives 10 more than arm 1 at
    any time. Arm 0 is played only early (episodes 0-19 alternate), arm 1 also late (20-39): on raw
    returns arm 1's mean is the higher (115 against 55), scored against the episodes just before
    them arm 0 is chosen."""
    bandit = SlidingWindowUCB(2, window=WINDOW, bonus=0.0, seed=0)
    raw: dict[int, list[float]] = {0: [], 1: []}
    for t in range(40):
        arm = t % 2 if t < 20 else 1
        raw[arm].append(5.0 * t + (10.0 if arm == 0 else 0.0))
        bandit.update(arm, raw[arm][-1])
    assert np.mean(raw[0]) == 55.0 and np.mean(raw[1]) == 115.0
    assert bandit.select() == 0
    scored = {a: np.mean([r for b, r in bandit.history if b == a]) for a in (0, 1)}
    assert scored[0] > scored[1] + 5.0
    assert [r for _, r in list(bandit.history)[:2]] == [0.0, -5.0]  # the first episode is its own baseline


def test_same_seed_same_choices_and_bad_arguments() -> None:
    runs = [play(SlidingWindowUCB(9, seed=4), game(2), 120, np.random.default_rng(0)) for _ in range(2)]
    assert runs[0] == runs[1]
    with pytest.raises(ValueError, match="window"):
        SlidingWindowUCB(3, window=0)
    with pytest.raises(ValueError, match="baseline"):
        SlidingWindowUCB(3, baseline=0)
    with pytest.raises(ValueError, match="arm 3"):
        SlidingWindowUCB(3).update(3, 1.0)


def test_arms_default_to_the_ladder_and_greedy_and_bad_lists_are_one_line() -> None:
    arms = Config(exploration="adaptive").arms()
    assert len(arms) == 9 and arms[0] == pytest.approx(0.4 ** 1) and arms[-1] == 0.0
    assert Config(bandit_arms="0.3, 0.01,0").arms() == (0.3, 0.01, 0.0)
    for bad in ("0.3,x", "1.5", ","):
        with pytest.raises(ConfigError, match="bandit_arms"):
            Config(bandit_arms=bad)


def test_builder_records_each_episodes_arm_and_the_bandit_picks_the_next() -> None:
    explorer = AdaptiveEpsilon({"arms": [0.5, 0.1, 0.0], "window": 10, "bonus": 0.3}, seed=3)
    b = RolloutBuilder(np.zeros(2, np.float32), actor_id=0, unroll_length=12, frame_stack=1)
    b.explorer = explorer
    used, r = [], None
    for t in range(12):
        if t % 3 == 0:
            used.append(explorer.arm)
        b.act(0, -0.1, 0)
        r = b.observe(np.zeros(2, np.float32), float(explorer.arm), False, t % 3 == 2, final_obs=np.zeros(2, np.float32))
    assert [ep["arm"] for ep in r.episodes] == used
    assert [ep["return"] for ep in r.episodes] == [3.0 * a for a in used]
    assert sorted(used[:3]) == [0, 1, 2]  # each arm once before any twice (untried arms first)


def test_learner_arm_stats_share_and_mean_return() -> None:
    stats = ArmStats((0.4, 0.0), window=4)
    for arm, ret in ((0, 1.0), (0, 3.0), (1, 10.0), (1, 20.0), (1, 30.0)):
        stats.add(arm, ret)
    arms = stats.report()["arms"]
    assert arms == {"0:eps=0.4": {"share": 0.25, "mean_return": 3.0},
                    "1:eps=0": {"share": 0.75, "mean_return": 20.0}}
    assert arms_console({"arms": arms}) == "  arms% 25/75"


def test_arm_outside_the_set_is_rejected_and_counted_through_real_sockets(procs, tmp_path) -> None:
    port = free_base_port()
    run = tmp_path / "run"
    procs.learner(*CARTPOLE, "--exploration", "adaptive", "--bandit-arms", "0.3,0", "--report-interval", "0.5",
                  port=port, run_dir=run)
    evil = ScriptedActor(port)
    try:
        welcome = evil.join()
        assert welcome["settings"]["exploration"] == {"arms": [0.3, 0.0], "window": 90, "bonus": 0.3}
        ended = cartpole_rollout(evil.actor_id, done_at=(9,))

        def episode(arm) -> list[dict]:
            return [{"return": 10.0, "length": 10, "frames": 10, "arm": arm}]

        for arm in (2, -1, 99, 1.0, None):
            evil.send(evil.rollout_message(ended, episodes=episode(arm)))
        evil.send(evil.rollout_message(ended, episodes=[{"return": 10.0, "length": 10, "frames": 10}]))
        wait_for(lambda: last_metrics(run).get("rejected_messages", 0) >= 6, 30, "6 rejected")
        evil.send(evil.rollout_message(ended, episodes=episode(1)))  # in the set: taken
        row = wait_for(lambda: (m := last_metrics(run)).get("episodes", 0) >= 1 and m, 30, "the episode")
    finally:
        evil.close()
    assert row["rejected_messages"] == 6
    assert row["arms"] == {"0:eps=0.3": {"share": 0.0, "mean_return": None},
                           "1:eps=0": {"share": 1.0, "mean_return": 10.0}}
    assert "bandit_window = 90" in (run / "config.toml").read_text()
