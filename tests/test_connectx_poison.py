"""Well-formed poison in ConnectX rollouts (issue 8's rules on issue 11's fields): a client that
joined like an actor sends real ConnectX rollouts with one hostile value each; a ConnectX learner
rejects and counts every one (an action its own mask forbids also as an illegal move), and still
takes the honest rollout and its games."""

from __future__ import annotations

import numpy as np
import torch

from actor.rollout import RolloutCollector
from common.envs import env_signature, make_env
from common.model import board_spec, build_model
from common.protocol import Rollout, pack_array
from tests.conftest import free_base_port, last_metrics, wait_for
from tests.scripted import ScriptedActor

T = 64  # several whole games in one rollout


def honest_rollout(actor_id: int) -> Rollout:
    sig = env_signature("connectx")
    torch.manual_seed(0)
    model = build_model(board_spec(sig.obs_shape, sig.n_actions, 32, 0, 0)).eval()
    collector = RolloutCollector(make_env("connectx", seed=5), actor_id=actor_id, seed=5, unroll_length=T,
                                 frame_stack=1)
    r = collector.collect(model, 0)
    assert len(r.episodes) >= 2 and any(ep["result"] for ep in r.episodes[1:])
    return r


def poison(evil: ScriptedActor, r: Rollout) -> tuple[list[bytes], int]:
    """(messages, how many of them are illegal moves)."""
    def episodes(i: int, **fields) -> list[dict]:
        eps = [dict(ep) for ep in r.episodes]
        eps[i].update(fields)
        return eps

    t = 5  # a step whose mask is replaced by one that forbids the action taken
    illegal = r.action_mask.copy()
    illegal[t] = False
    illegal[t, (r.actions[t] + 1) % 7] = True
    none_legal = r.action_mask.copy()
    none_legal[t] = False
    lie = next(i for i, ep in enumerate(r.episodes) if i > 0 and ep["result"])  # a whole game, not a draw
    flipped = -r.episodes[lie]["result"]
    msgs = [
        evil.rollout_message(r, episodes=episodes(0, seat=5)),
        evil.rollout_message(r, episodes=episodes(0, result=7)),
        evil.rollout_message(r, episodes=episodes(0, opponent="alphazero")),
        evil.rollout_message(r, action_mask=pack_array(np.zeros((T, 7), bool))),  # all false
        evil.rollout_message(r, action_mask=pack_array(none_legal)),  # one step with no legal column
        evil.rollout_message(r, action_mask=pack_array(np.ones((T, 6), bool))),  # wrong shape
        evil.rollout_message(r, episodes=episodes(lie, result=flipped)),  # result is not its return
        evil.rollout_message(r, episodes=episodes(lie, result=flipped, **{"return": float(flipped)})),
        evil.rollout_message(r, episodes=episodes(lie, length=30, frames=30)),  # a player moves 21 times at most
        evil.rollout_message(r, action_mask=pack_array(illegal)),  # an illegal move
    ]
    return msgs, 1


def test_connectx_poison_is_rejected_and_counted(procs, tmp_path):
    port = free_base_port()
    run = tmp_path / "run"
    procs.learner("--env", "connectx", "--unroll-length", str(T), "--eval-interval", "0", port=port, run_dir=run)
    evil = ScriptedActor(port)
    try:
        evil.join()
        r = honest_rollout(evil.actor_id)
        msgs, illegal = poison(evil, r)
        for buf in msgs:
            evil.send(buf)
        evil.send(evil.rollout_message(r))  # the same rollout, honest: taken
        row = wait_for(lambda: (m := last_metrics(run)).get("steps", 0) >= T
                       and m["rejected_messages"] >= len(msgs) and m, 60, "rollouts judged")
        assert row["rejected_messages"] == len(msgs) and row["illegal_moves"] == illegal
        assert row["steps"] == T and row["games"] == len(r.episodes) and row["unverified_episodes"] == 0
    finally:
        evil.close()
