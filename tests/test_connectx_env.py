"""The ConnectX environment: seats, the opponent's reply inside step, masks, rewards, opponents."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.connectx.env import ConnectXEnv
from common.connectx.features import N_PLANES
from common.connectx.game import Game
from common.connectx.opponents import PolicyPlayer, RandomPlayer, scripted
from common.model import ConnectXNet


class Scripted:
    """Plays a fixed list of columns."""

    def __init__(self, columns: str, name: str = "scripted"):
        self.columns = [int(c) for c in columns]
        self.name = name

    def act(self, own: int, opp: int) -> int:
        return self.columns.pop(0)


def play(env: ConnectXEnv, columns: str):
    out = None
    for c in columns:
        out = env.step(int(c))
        if out[2]:
            break
    return out


def test_first_seat_sees_an_empty_board_second_seat_sees_the_opening_move():
    env = ConnectXEnv(seed=0)
    obs, info = env.reset(options={"seat": 0, "opponent": Scripted("3")})
    assert obs.shape == (N_PLANES, 6, 7) and obs[:2].sum() == 0 and (obs[5] == 1).all()
    assert info["action_mask"].all()
    obs, info = env.reset(options={"seat": 1, "opponent": Scripted("3")})
    assert obs[0].sum() == 0 and obs[1, 5, 3] == 1 and obs[1].sum() == 1  # its piece, its view
    assert (obs[5] == 0).all()


def test_win_loss_draw_rewards_and_episode_info():
    env = ConnectXEnv(seed=0)
    env.reset(options={"seat": 0, "opponent": Scripted("666", "wall")})
    _, r, term, trunc, info = play(env, "0000")
    assert (r, term, trunc) == (1.0, True, False)
    assert info["result"] == 1 and info["seat"] == 0 and info["opponent"] == "wall" and not info["illegal"]

    env.reset(options={"seat": 1, "opponent": Scripted("0000")})
    _, r, term, _, info = play(env, "666")
    assert (r, term, info["result"], info["seat"]) == (-1.0, True, -1, 1)

    draw = "015502320345364356222230416104501114435666"
    env.reset(options={"seat": 0, "opponent": Scripted(draw[1::2])})
    _, r, term, _, info = play(env, draw[0::2])
    assert (r, term, info["result"]) == (0.0, True, 0)


def test_illegal_move_loses_and_is_flagged():
    env = ConnectXEnv(seed=0)
    obs, info = env.reset(options={"seat": 0, "opponent": Scripted("2222222")})
    for _ in range(3):
        obs, _, _, _, info = env.step(2)
    assert not info["action_mask"][2] and info["action_mask"].sum() == 6
    _, r, term, _, info = env.step(2)
    assert (r, term, info["result"], info["illegal"]) == (-1.0, True, -1, True)
    with pytest.raises(RuntimeError):
        env.step(0)


def test_opponent_is_picked_per_game_and_seats_alternate():
    picked = []

    def pick():
        picked.append(RandomPlayer(len(picked), name=f"r{len(picked)}"))
        return picked[-1]

    env = ConnectXEnv(seed=4, pick_opponent=pick)
    seats, names = [], []
    for _ in range(6):
        env.reset()
        done = False
        while not done:
            mask = env._view()[1]["action_mask"]
            _, _, done, _, info = env.step(int(np.flatnonzero(mask)[0]))
        seats.append(info["seat"])
        names.append(info["opponent"])
    assert names == [f"r{i}" for i in range(6)] and len(picked) == 6
    assert seats[0::2] == [seats[0]] * 3 and seats[1::2] == [1 - seats[0]] * 3


def test_policy_player_never_plays_a_full_column():
    torch.manual_seed(0)
    net = ConnectXNet(N_PLANES, 6, 7, 7, channels=0, blocks=0, hidden=16)
    with torch.no_grad():
        net.policy.bias.copy_(torch.tensor([0, 0, 50.0, 0, 0, 0, 0]))  # loves column 2
    g = Game()
    for _ in range(6):
        g.play(2)
    own, opp = g.own_opp()
    assert PolicyPlayer(net, "net", greedy=True).act(0, 0) == 2
    assert PolicyPlayer(net, "net", greedy=True).act(own, opp) != 2
    sampled = PolicyPlayer(net, "net", seed=1)
    assert 2 not in {sampled.act(own, opp) for _ in range(300)}


def test_scripted_opponents_by_name():
    assert scripted("random").name == "random"
    assert scripted("negamax").depth == 4 and scripted("negamax2").depth == 2
    with pytest.raises(ValueError, match="unknown opponent"):
        scripted("alphazero")
