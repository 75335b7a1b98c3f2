"""The update guard: a non-finite loss, gradient or result never reaches the weights (issue 8.1)."""

from __future__ import annotations

import copy
import math

import numpy as np
import torch

from common.config import Config
from common.model import build_model, model_spec
from common.protocol import LOGP_FLOOR, MAX_ABS_OBSERVATION, Rollout
from learner.batcher import collate
from learner.trainer import Trainer, finite_parameters

T, B = 16, 4


def batch(rewards: float = 1.0, logp: float = math.log(0.5), obs: float | None = None, seed: int = 0):
    rng = np.random.default_rng(seed)
    rollouts = []
    for b in range(B):
        frames = rng.normal(size=(T + 1, 4)).astype(np.float32) if obs is None else \
            np.full((T + 1, 4), obs, np.float32) * rng.choice([-1, 1], size=(T + 1, 4)).astype(np.float32)
        rollouts.append(Rollout(b, 0, frames, np.zeros((0, 4), np.float32),
                                rng.integers(0, 2, T).astype(np.int32), np.full(T, logp, np.float32),
                                np.full(T, rewards, np.float32) * rng.choice([-1, 1], T).astype(np.float32),
                                np.zeros(T, bool), np.zeros(T, bool)))
    return collate(rollouts, 0)


def trainer(**cfg) -> Trainer:
    torch.manual_seed(0)
    c = Config(env="CartPole-v1", **cfg)
    return Trainer(build_model(model_spec((4,), 1, 2, 64)), c, torch.device("cpu"))


def state(t: Trainer) -> tuple[dict, dict]:
    return copy.deepcopy(t.model.state_dict()), copy.deepcopy(t.optimizer.state_dict())


def same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_non_finite_loss_skips_the_update_and_keeps_the_weights():
    t = trainer(epochs=2, minibatches=2)
    assert t.update(batch()).skipped is None
    model, opt = state(t)
    poisoned = batch()
    poisoned.rewards[3, 1] = np.inf  # what no validated rollout can carry
    result = t.update(poisoned)
    assert result.skipped == "loss" and result.stats == {}
    assert same(model, t.model.state_dict())
    assert opt["state"][0]["step"] == t.optimizer.state_dict()["state"][0]["step"]
    # the minibatch without the poison may have stepped first: all of it is undone
    assert same({k: v["exp_avg"] for k, v in opt["state"].items()},
                {k: v["exp_avg"] for k, v in t.optimizer.state_dict()["state"].items()})
    assert t.update(batch(seed=1)).skipped is None  # and training goes on


def test_update_that_would_leave_non_finite_weights_is_undone():
    t = trainer(lr=1e36)  # weights of this size overflow every float32 sum
    model, _ = state(t)
    result = t.update(batch())
    assert result.skipped == "weights"
    assert same(model, t.model.state_dict()) and finite_parameters(t.model)


def test_values_at_every_bound_a_real_actor_can_reach_keep_the_weights_finite():
    """Validation admits logp down to LOGP_FLOOR, rewards up to --max-abs-reward and float
    observations up to MAX_ABS_OBSERVATION: many updates on all of them at once stay finite."""
    t = trainer(epochs=2, minibatches=2, lr=1e-2)
    cfg = Config()
    for seed in range(20):
        result = t.update(batch(rewards=cfg.max_abs_reward, logp=LOGP_FLOOR, obs=MAX_ABS_OBSERVATION, seed=seed))
        assert result.skipped is None, result
    assert finite_parameters(t.model)
    assert t.update(batch()).skipped is None


def test_learning_rate_anneals_linearly_to_zero_over_total_frames():
    t = trainer(lr=1e-3, total_frames=4 * B * T * 2, minibatches=2)  # 4 batches of B x T steps, frame skip 2
    t.frames_per_step = 2
    lrs = []
    for _ in range(5):
        result = t.update(batch())
        lrs.append(result.stats["charts/learning_rate"])
        assert t.optimizer.param_groups[0]["lr"] == lrs[-1]
    np.testing.assert_allclose(lrs, [1e-3, 0.75e-3, 0.5e-3, 0.25e-3, 0.0])
    assert t.frames_done == 5 * B * T * 2


def test_learning_rate_stays_without_total_frames_or_with_anneal_off():
    for cfg in ({"total_frames": 0}, {"total_frames": B * T, "anneal_lr": False}):
        t = trainer(lr=3e-4, **cfg)
        for _ in range(3):
            assert t.update(batch()).stats["charts/learning_rate"] == 3e-4


_ADAM_CHECK = """
import sys, torch
from torch import nn
from learner.trainer import Adam

def run(cls):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2))
    opt = cls(m.parameters(), lr=1e-2, eps=1e-5)
    for i in range(20):
        opt.zero_grad()
        m(torch.randn(8, 4, generator=torch.Generator().manual_seed(i))).pow(2).mean().backward()
        opt.step()
    state = opt.state_dict()
    opt.load_state_dict(state)
    return [p.detach().clone() for p in m.parameters()], state

ours, ours_state = run(Adam)
print("dynamo" if "torch._dynamo" in sys.modules else "no dynamo")
theirs, theirs_state = run(torch.optim.Adam)
assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True)), "not the same update"
assert ours_state["param_groups"] == theirs_state["param_groups"]
assert all(torch.equal(ours_state["state"][k][n], theirs_state["state"][k][n])
           for k in theirs_state["state"] for n in ("step", "exp_avg", "exp_avg_sq"))
print("equal")
"""


def test_the_learners_adam_is_torchs_without_importing_the_compiler():
    """The learner's optimizer takes torch.optim.Adam's steps bit for bit, with the same
    state_dict (checkpoints), and never imports torch._dynamo (2.6 s of CPU at every learner
    start); a fresh process, since torch's own Adam in this one has imported it already."""
    import subprocess
    import sys

    from tests.conftest import ROOT
    out = subprocess.run([sys.executable, "-c", _ADAM_CHECK], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["no", "dynamo", "equal"], out.stdout


def image_batch(seed: int = 0, n_actions: int = 6):
    """Rollouts of 84x84 frames with a stack of 4, as an Atari actor sends them."""
    rng = np.random.default_rng(seed)
    return collate([Rollout(b, 0, rng.integers(0, 256, (T + 1, 84, 84), dtype=np.uint8),
                            rng.integers(0, 256, (3, 84, 84), dtype=np.uint8),
                            rng.integers(0, n_actions, T).astype(np.int32), np.full(T, math.log(1 / n_actions), np.float32),
                            rng.choice([-1.0, 0.0, 1.0], T).astype(np.float32), np.zeros(T, bool), np.zeros(T, bool))
                    for b in range(B)], 0)


def test_bf16_precision_runs_the_forward_in_bfloat16_and_keeps_weights_and_losses_fp32():
    """--precision bf16: the Nature CNN's convolutions and matrix products run in bfloat16 (what
    makes the CPU update 2.3x faster per sample on avx512_bf16, docs/BENCHMARKS.md); the weights,
    the optimizer state and the statistics stay fp32 and finite. fp32 (the default) runs none."""
    seen: dict[str, set] = {}
    results = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        t = Trainer(build_model(model_spec((84, 84), 4, 6, 64)), Config(env="ALE/Pong-v5", precision=precision,
                                                                        epochs=2, minibatches=2), torch.device("cpu"))
        seen[precision] = set()
        for layer in (t.model.torso[0], t.model.fc[0], t.model.policy):
            layer.register_forward_hook(lambda m, i, out, p=precision: seen[p].add(out.dtype))
        before, _ = state(t)
        result = t.update(image_batch())
        assert result.skipped is None, result
        assert all(math.isfinite(v) for v in result.stats.values())
        after = t.model.state_dict()
        assert all(v.dtype == torch.float32 for v in after.values())
        assert all(s["exp_avg"].dtype == torch.float32 for s in t.optimizer.state_dict()["state"].values())
        assert not same(before, after)
        results[precision] = after
    assert seen == {"fp32": {torch.float32}, "bf16": {torch.bfloat16}}
    # the same start and batch: close, not equal (bfloat16 keeps 8 bits of mantissa)
    w32, w16 = results["fp32"]["fc.0.weight"], results["bf16"]["fc.0.weight"]
    assert not torch.equal(w32, w16) and torch.allclose(w32, w16, atol=1e-2)
