"""`learner export-kaggle`: one file, numpy and the standard library only, same moves as torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.action_sampling import mask_logits
from common.connectx.export_kaggle import write_submission
from common.connectx.features import N_PLANES, legal_mask, planes
from common.connectx.game import Game
from common.model import ConnectXNet
from testkit.connectx_reference import random_positions

RUNNER = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("submission", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
assert "torch" not in sys.modules, "the submission imported torch"
assert not any(m == "common" or m.startswith("common.") for m in sys.modules), "it imported the project"
tops = [name for name, v in vars(mod).items() if callable(v) and getattr(v, "__module__", "") == "submission"
        and type(v).__name__ == "function"]
class Obs(dict):  # Kaggle's Struct: a dict whose keys are also attributes
    __getattr__ = dict.__getitem__
out = [mod.agent(Obs(board=b, mark=m), Obs(rows=6, columns=7, inarow=4)) for b, m in json.load(sys.stdin)]
print(json.dumps({"moves": out, "last": tops[-1]}))
"""


def positions(n: int, seed: int) -> list[tuple[list[int], int]]:
    return [(g.board(), g.mark) for g in random_positions(n, seed, max_moves=40)]


@pytest.mark.parametrize("channels, blocks", [(0, 0), (8, 2)])
def test_exported_agent_plays_the_torch_policys_legal_moves(tmp_path: Path, channels: int, blocks: int):
    torch.manual_seed(channels)
    net = ConnectXNet(N_PLANES, 6, 7, 7, channels=channels, blocks=blocks, hidden=32).eval()
    with torch.no_grad():  # spread the logits so the greedy choice depends on the input
        net.policy.weight.mul_(300.0)
    out = write_submission(net, tmp_path / "submission.py", "a test network")
    cases = positions(300, seed=channels)
    # full columns included: late positions have them; the net is free to prefer them
    assert any(not all(legal_mask(*Game.from_board(b).own_opp())) for b, _ in cases)
    proc = subprocess.run([sys.executable, "-I", "-c", RUNNER, str(out)], input=json.dumps(cases),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["last"] == "agent"
    differ = 0
    for (board, mark), move in zip(cases, result["moves"], strict=True):
        g = Game.from_board(board)
        own, opp = g.pieces[mark - 1], g.pieces[2 - mark]
        assert g.legal(move), (board, mark, move)
        with torch.inference_mode():
            logits = mask_logits(net.policy_logits(torch.from_numpy(planes(own, opp))[None]),
                                 torch.from_numpy(legal_mask(own, opp))[None])[0]
        top2 = torch.topk(logits, 2).values
        if top2[0] - top2[1] > 1e-3:  # float32 sums in another order may swap a near-tie
            differ += int(move != int(logits.argmax()))
    assert differ == 0
    assert len(set(result["moves"])) > 3  # the agent is not one constant column
