"""Masked policies: illegal logits -> MASK_LOGIT (finite), and the loss uses the mask the actor used."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.action_sampling import MASK_LOGIT, mask_logits, mask_logits_np
from common.connectx.features import N_PLANES
from learner.losses import LossConfig, appo_loss
from learner.vtrace import from_importance_weights

T, B, A = 7, 6, 5


def masked_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """On-policy data of the masked policy: actions sampled among the legal ones only."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(T, B, A, generator=g) * 2
    mask = torch.rand(T, B, A, generator=g) > 0.4
    mask[..., 0] |= ~mask.any(-1)  # at least one legal action per step
    probs = torch.softmax(mask_logits(logits, mask), -1)
    actions = torch.multinomial(probs.view(-1, A), 1, generator=g).view(T, B)
    behaviour = torch.log(probs.gather(-1, actions[..., None]).squeeze(-1))
    return {
        "logits": logits.requires_grad_(),
        "values": torch.randn(T, B, generator=g, requires_grad=True),
        "bootstrap_value": torch.randn(B, generator=g),
        "actions": actions,
        "behaviour_logp": behaviour,
        "rewards": torch.randn(T, B, generator=g),
        "discounts": 0.99 * (torch.rand(T, B, generator=g) > 0.2).float(),
        "action_mask": mask,
    }


def test_mask_is_finite_and_zeroes_illegal_probabilities():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 9.0]])
    mask = torch.tensor([[True, False, True], [False, False, True]])
    masked = mask_logits(logits, mask)
    assert masked[0, 1] == MASK_LOGIT and torch.isfinite(masked).all()
    assert torch.equal(masked[mask], logits[mask])
    p = torch.softmax(masked, -1)
    assert p[0, 1] == 0 and p[1, 0] == 0 and p[1, 2] == 1
    log_p = torch.log_softmax(masked, -1)
    assert torch.isfinite(-(p * log_p).sum(-1)).all()  # -inf instead would make 0 * -inf = NaN
    inf_masked = logits.masked_fill(~mask, float("-inf"))
    assert torch.isnan((torch.softmax(inf_masked, -1) * torch.log_softmax(inf_masked, -1)).sum(-1)).any()
    assert np.array_equal(mask_logits_np(logits.numpy(), mask.numpy()), masked.numpy())
    assert mask_logits(logits, None) is logits


def test_on_policy_masked_data_has_unit_ratios_only_with_the_mask():
    batch = masked_batch()
    _, stats = appo_loss(**batch, cfg=LossConfig())
    assert stats["losses/rho_mean"] == pytest.approx(1.0, abs=1e-5)
    assert stats["losses/approx_kl"] == pytest.approx(0.0, abs=1e-6)
    assert stats["losses/clipfrac"] == 0.0
    unmasked = dict(batch, action_mask=None)  # the learner forgetting the actor's mask
    _, wrong = appo_loss(**unmasked, cfg=LossConfig())
    assert wrong["losses/rho_mean"] < 0.9


def test_entropy_counts_legal_actions_only():
    batch = masked_batch(1)
    _, stats = appo_loss(**batch, cfg=LossConfig())
    ent = []
    for t in range(T):
        for b in range(B):
            legal = batch["logits"].detach()[t, b][batch["action_mask"][t, b]]
            ent.append(torch.distributions.Categorical(logits=legal).entropy())
    assert stats["losses/entropy"] == pytest.approx(torch.stack(ent).mean().item(), rel=1e-5)


def test_loss_matches_vtrace_on_the_renormalised_legal_policy():
    batch = masked_batch(2)
    cfg = LossConfig(ent_coef=0.0, vf_coef=0.0, normalize_advantages=False)
    loss, _ = appo_loss(**batch, cfg=cfg)
    # independent: log pi(a) = logit_a - logsumexp over the legal logits, no MASK_LOGIT involved
    logits, mask, actions = batch["logits"].detach(), batch["action_mask"], batch["actions"]
    lse = torch.stack([torch.logsumexp(logits[t, b][mask[t, b]], 0) for t in range(T) for b in range(B)])
    logp = logits.gather(-1, actions[..., None]).squeeze(-1) - lse.view(T, B)
    vt = from_importance_weights(logp - batch["behaviour_logp"], batch["discounts"], batch["rewards"],
                                 batch["values"].detach(), batch["bootstrap_value"])
    ratio = torch.exp(logp - batch["behaviour_logp"])
    want = -torch.min(ratio * vt.pg_advantages, ratio.clamp(0.8, 1.2) * vt.pg_advantages).mean()
    assert loss.item() == pytest.approx(want.item(), rel=1e-5, abs=1e-7)


def test_illegal_logits_get_no_gradient():
    batch = masked_batch(3)
    loss, _ = appo_loss(**batch, cfg=LossConfig(ent_coef=0.05))
    loss.backward()
    grad = batch["logits"].grad
    assert (grad[~batch["action_mask"]] == 0).all()
    assert (grad[batch["action_mask"]] != 0).any()


def test_mask_shape_is_checked():
    batch = masked_batch()
    batch["action_mask"] = batch["action_mask"][:, :, :-1]
    with pytest.raises(ValueError, match="action_mask"):
        appo_loss(**batch, cfg=LossConfig())


def test_trainer_applies_the_batch_mask():
    from common.config import Config
    from common.model import ConnectXNet
    from learner.batcher import Batch
    from learner.trainer import Trainer

    torch.manual_seed(0)
    net = ConnectXNet(N_PLANES, 6, 7, 7, channels=0, blocks=0, hidden=32)
    rng = np.random.default_rng(0)
    Tn, Bn = 8, 4
    frames = (rng.random((Tn + 1, Bn, N_PLANES, 6, 7)) < 0.3).astype(np.uint8)
    mask = rng.random((Tn, Bn, 7)) < 0.5
    mask[..., 3] = True
    with torch.no_grad():
        logits = mask_logits(net.policy_logits(torch.from_numpy(frames[:-1]).flatten(0, 1)).view(Tn, Bn, 7),
                             torch.from_numpy(mask))
        probs = torch.softmax(logits, -1)
    actions = torch.multinomial(probs.view(-1, 7), 1).view(Tn, Bn)
    behaviour = torch.log(probs.gather(-1, actions[..., None]).squeeze(-1)).numpy()

    def stats(with_mask: bool) -> dict[str, float]:
        model = ConnectXNet(N_PLANES, 6, 7, 7, channels=0, blocks=0, hidden=32)
        model.load_state_dict(net.state_dict())
        cfg = Config(env="CartPole-v1", epochs=1, minibatches=1, unroll_length=Tn, batch_size=Tn * Bn)
        batch = Batch(frames=frames, stack_idx=np.broadcast_to(np.arange(Tn + 1)[:, None, None], (Tn + 1, Bn, 1)).copy(),
                      actions=actions.numpy(), behaviour_logp=behaviour, rewards=rng.normal(size=(Tn, Bn)).astype(np.float32),
                      terminated=np.zeros((Tn, Bn), bool), cut=np.zeros((Tn, Bn), bool),
                      final_frames=np.zeros((0, *frames.shape[2:]), np.uint8), final_at=np.zeros((0, 2), np.int64),
                      lags=np.zeros(Bn, np.int64), actor_ids=np.arange(Bn),
                      action_mask=mask if with_mask else None)
        return Trainer(model, cfg, torch.device("cpu")).update(batch).stats

    assert stats(True)["losses/rho_mean"] == pytest.approx(1.0, abs=1e-5)
    assert stats(False)["losses/rho_mean"] < 0.95
