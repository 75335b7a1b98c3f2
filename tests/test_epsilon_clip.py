"""Epsilon exploration: the PPO clip against the actor's own policy, V-trace against the mixture;
the policy_logp field from the actor through the wire into the batch; robust approx_kl and rho."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from actor.rollout import RolloutBuilder
from common.action_sampling import action_probs, own_logp, sample_action
from common.protocol import (
    LOGP_FLOOR,
    ProtocolError,
    RolloutSpec,
    decode,
    encode_rollout,
    validate_rollout,
)
from learner.batcher import collate
from learner.losses import LossConfig, appo_loss

T, B, A = 4, 3, 4
EPS = 0.9  # the ladder's most exploring actor is 0.4; 0.9 makes the effect plain


def confident_batch() -> dict[str, torch.Tensor]:
    """An actor whose policy (the learner's too) puts 0.99 on action 0, mixing in 0.9 noise, took
    action 0 everywhere; positive rewards: the update should push action 0 up."""
    logits = torch.tensor([math.log(0.99), *(math.log(0.01 / 3),) * 3]).expand(T, B, A).clone()
    logits.requires_grad_(True)
    actions = torch.zeros(T, B, dtype=torch.int64)
    mixture = torch.from_numpy(action_probs(logits.detach()[0, 0], EPS)).float()
    g = torch.Generator().manual_seed(0)
    return {
        "logits": logits,
        "values": torch.zeros(T, B, requires_grad=True),
        "bootstrap_value": torch.zeros(B),
        "actions": actions,
        "behaviour_logp": mixture[0].log().expand(T, B).clone(),
        "rewards": torch.rand(T, B, generator=g) + torch.arange(B) * 0.5,  # advantages differ by column
        "discounts": torch.full((T, B), 0.99),
    }


def logit_grad(batch: dict[str, torch.Tensor], **kw) -> torch.Tensor:
    # no entropy bonus: the logits' gradient is the surrogate's alone
    loss, _ = appo_loss(**batch, cfg=LossConfig(clip_eps=0.2, ent_coef=0.0, normalize_advantages=False), **kw)
    loss.backward()
    return batch["logits"].grad


def test_high_epsilon_actor_confident_action_gets_policy_gradient() -> None:
    batch = confident_batch()
    own = torch.log_softmax(batch["logits"].detach(), -1)[..., 0]  # the actor's unmixed policy
    # against the mixture, pi/mu = 0.99 / 0.324 = 3.05 lies beyond 1.2: clipped, no policy gradient
    assert logit_grad(confident_batch()).abs().max() == 0.0
    g_own = logit_grad(batch, policy_logp=own)
    assert (g_own[..., 0] < 0).all()  # every step raises action 0's logit: the surrogate acts


def test_vtrace_keeps_the_mixture_and_clip_uses_own_policy() -> None:
    batch = confident_batch()
    own = torch.log_softmax(batch["logits"].detach(), -1)[..., 0]
    _, with_own = appo_loss(**confident_batch(), cfg=LossConfig(), policy_logp=own)
    _, without = appo_loss(**confident_batch(), cfg=LossConfig())
    # rho is pi / mixture in both (V-trace's), the clip fraction is only 0 against the own policy
    assert with_own["losses/rho_mean"] == pytest.approx(without["losses/rho_mean"]) == pytest.approx(0.99 / 0.32425, rel=1e-3)
    assert with_own["losses/clipfrac"] == 0.0 and without["losses/clipfrac"] == 1.0
    assert with_own["losses/approx_kl"] == pytest.approx(0.0, abs=1e-6)


def test_one_action_at_the_log_prob_floor_does_not_blow_up_the_statistics() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(8, 64, A, generator=g)
    actions = torch.randint(0, A, (8, 64), generator=g)
    logp = torch.log_softmax(logits, -1).gather(-1, actions[..., None]).squeeze(-1)
    behaviour = logp.clone()
    behaviour[0, 0] = LOGP_FLOOR  # one action the actor reported at the floor: ratio exp(69)
    _, stats = appo_loss(logits, torch.zeros(8, 64), torch.zeros(64), actions, behaviour,
                         torch.zeros(8, 64), torch.full((8, 64), 0.99), LossConfig())
    naive_kl = (math.exp(logp[0, 0].item() - LOGP_FLOOR) - 1) / behaviour.numel()
    assert naive_kl > 1e25  # what the plain mean read
    assert 0.0 < stats["losses/approx_kl"] < 0.05
    assert 1.0 < stats["losses/rho_mean"] < 1.05
    assert stats["losses/rho_median"] == pytest.approx(1.0, abs=1e-5)


SPEC = RolloutSpec(unroll_length=T, frame_shape=(2,), frame_dtype="float32", frame_stack=1, n_actions=A)


def built_rollout(epsilon: float, seed: int = 0):
    """A rollout recorded as an actor with `epsilon` records it (sample_action, own_logp)."""
    rng = np.random.default_rng(seed)
    b = RolloutBuilder(np.zeros(2, np.float32), actor_id=1, unroll_length=T, frame_stack=1)
    logits = np.array([2.0, 0.0, -1.0, 0.5])
    for t in range(T):
        action, logp = sample_action(logits, rng, epsilon=epsilon)
        own = float(own_logp(logits[None], np.array([action]))[0]) if epsilon > 0 else None
        b.act(action, logp, 0, own_logp=own)
        r = b.observe(np.full(2, t, np.float32), 1.0, False, False)
    return r


def test_actor_sends_policy_logp_only_when_it_mixes_and_it_survives_the_wire() -> None:
    greedy = built_rollout(0.0)
    assert greedy.policy_logp is None
    assert "policy_logp" not in decode(encode_rollout(greedy))  # the wire as it was
    mixed = built_rollout(0.4)
    back = validate_rollout(decode(encode_rollout(mixed)), SPEC, latest_version=0)
    probs = action_probs(np.array([2.0, 0.0, -1.0, 0.5]))
    np.testing.assert_allclose(back.policy_logp, np.log(probs[back.actions]), rtol=1e-6)
    assert (back.policy_logp != back.behaviour_logp).all()


@pytest.mark.parametrize("bad", [np.nan, 0.5, LOGP_FLOOR - 1.0])
def test_policy_logp_out_of_bounds_rejected(bad: float) -> None:
    msg = decode(encode_rollout(built_rollout(0.4)))
    own = np.full(T, -0.5, np.float32)
    own[1] = bad
    msg["policy_logp"] = {"dtype": "float32", "shape": [T], "data": own.tobytes()}
    with pytest.raises(ProtocolError, match="policy_logp"):
        validate_rollout(msg, SPEC, latest_version=0)
    msg["policy_logp"] = {"dtype": "float32", "shape": [T + 1], "data": np.zeros(T + 1, np.float32).tobytes()}
    with pytest.raises(ProtocolError, match="shape"):
        validate_rollout(msg, SPEC, latest_version=0)


def test_batch_takes_behaviour_logp_for_rollouts_without_noise() -> None:
    greedy, mixed = built_rollout(0.0, seed=1), built_rollout(0.4, seed=2)
    assert collate([greedy, greedy], 0).policy_logp is None
    batch = collate([greedy, mixed], 0)
    np.testing.assert_array_equal(batch.policy_logp[:, 0], greedy.behaviour_logp)
    np.testing.assert_array_equal(batch.policy_logp[:, 1], mixed.policy_logp)
