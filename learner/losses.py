"""APPO loss: PPO clipped surrogate driven by V-trace targets and advantages.

The actors' behaviour policy lags the learner's, so the V-trace correction (see
:mod:`learner.vtrace`) provides off-policy value targets and advantages, and the PPO ratio
``pi / mu`` against the behaviour policy is clipped to keep each update close to it. For a
negative advantage the surrogate is also bounded below by ``dual_clip * advantage`` (dual-clip
PPO, Ye et al. 2020): without it a ratio as large as the bounds on behaviour_logp allow
(``exp(69)``) makes a gradient that overflows float32.

With epsilon exploration the behaviour is a mixture ``(1 - eps) * mu + eps * uniform``: V-trace
corrects for that mixture (``behaviour_logp``), while the PPO ratio is measured against the
actor's own policy ``mu`` (``policy_logp``), else a high-epsilon actor's confident actions have
``pi / mixture`` far above ``1 + clip_eps`` and get no gradient.

Advantage normalisation under such a mixture splits the V-trace weight in two: the policy's own
drift since the actor acted, ``pi / mu`` (what a run without noise has too), and the exploration
weight ``w = mu / mixture``. The advantages are weighted by the drift and centred as without noise,
then multiplied by ``w``: ``w * (drift * delta - mean) / std``. A constant baseline ``b`` is
harmless only where it multiplies a weight that averages to one over the sampled actions:
centred after ``w``, ``(w * drift * delta - b)`` adds ``-b * E_mixture[grad log pi]``, which is
not zero when the actions come from a mixture. With advantages mostly positive (a value function
lagging a policy that improves) it pushed every epsilon-drawn action down, and the policy
collapsed onto one action whatever the rewards (issue 22's adaptive run: entropy 0.05 against
0.60). Centring under the whole weight instead, ``rho * (delta - mean(delta))``, fixed that but
left a run with eps 1e-6 (no exploration to speak of) learning differently from one without
noise (1,097 against 1,297 on Airstriker): the drift part of the weight belongs above the
baseline, as it is without noise. As eps goes to 0, ``w`` goes to 1 and the loss is the one
without noise.

The logged ``approx_kl`` and ``rho`` are computed on log-ratios clamped to
``+-STAT_LOG_RATIO_BOUND``: one action at the log-prob floor (a ratio of ``exp(69)``) would
otherwise make the batch's mean read 5e28.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from common.action_sampling import mask_logits
from learner.vtrace import from_importance_weights

__all__ = ["LossConfig", "appo_loss"]

# No gamma here: callers pass per-step discounts (gamma * (1 - done)) already.
# No value clipping: it needs the behaviour values, which the trajectories do not carry.


@dataclass(frozen=True)
class LossConfig:
    """Hyper-parameters of :func:`appo_loss`."""

    clip_eps: float = 0.2
    """PPO ratio clip range: ratios outside ``[1 - clip_eps, 1 + clip_eps]`` get no gradient."""
    vf_coef: float = 0.5
    """Weight of the value loss in the total loss."""
    ent_coef: float = 0.01
    """Weight of the entropy bonus (subtracted from the total loss)."""
    lambda_: float = 1.0
    """V-trace lambda (trace cutting); 1.0 is plain V-trace."""
    clip_rho: float | None = 1.0
    """V-trace ``rho_bar`` for the TD errors; ``None`` disables clipping."""
    clip_pg_rho: float | None = 1.0
    """V-trace clipping of the policy-gradient importance weights; ``None`` disables it."""
    normalize_advantages: bool = True
    """Standardise the advantages of each call, i.e. of each minibatch the trainer passes
    (as CleanRL's PPO does), before the surrogate. Under an exploration mixture the advantages
    are standardised before their V-trace weights (see the module's docstring)."""
    dual_clip: float | None = 3.0
    """Lower bound ``dual_clip * A`` of the surrogate where ``A < 0``; ``None`` disables it."""

    def __post_init__(self) -> None:
        if not self.clip_eps > 0:
            raise ValueError(f"clip_eps must be positive, got {self.clip_eps!r}")
        if self.dual_clip is not None and not self.dual_clip > 1:
            raise ValueError(f"dual_clip must be above 1 or None, got {self.dual_clip!r}")
        if not 0 <= self.lambda_ <= 1:
            raise ValueError(f"lambda_ must be in [0, 1], got {self.lambda_!r}")


STAT_KEYS = (
    "losses/policy_loss",
    "losses/value_loss",
    "losses/entropy",
    "losses/approx_kl",
    "losses/clipfrac",
    "losses/rho_mean",
    "losses/rho_median",
    "losses/total",
)
STAT_LOG_RATIO_BOUND = 3.0
"""Log-ratios enter the logged statistics clamped to +-this (ratios within [0.05, 20])."""


def appo_loss(
    logits: Tensor,
    values: Tensor,
    bootstrap_value: Tensor,
    actions: Tensor,
    behaviour_logp: Tensor,
    rewards: Tensor,
    discounts: Tensor,
    cfg: LossConfig,
    action_mask: Tensor | None = None,
    truncated: Tensor | None = None,
    final_values: Tensor | None = None,
    policy_logp: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Compute the APPO loss for one time-major batch (the trainer's minibatch) of trajectories.

    Args:
        logits: ``[T, B, A]`` current-policy logits (with grad).
        values: ``[T, B]`` current value estimates ``V(x_t)`` (with grad).
        bootstrap_value: ``[B]`` current value of the observation after the last step;
            only used (detached) inside the V-trace targets.
        actions: ``[T, B]`` int64 actions taken by the actors.
        behaviour_logp: ``[T, B]`` log-prob of each action under the distribution it was drawn
            from (with epsilon exploration, the mixture): V-trace's ``mu``.
        rewards: ``[T, B]`` rewards.
        discounts: ``[T, B]`` per-step discounts, ``gamma * (1 - terminated)``.
        cfg: loss hyper-parameters.
        action_mask: ``[T, B, A]`` bool, True where an action was legal, or None. Illegal logits
            become ``MASK_LOGIT`` first (the mask the actor applied), so the log-probabilities
            in the V-trace and PPO ratios are those of the masked policy and the entropy counts
            legal actions only.
        truncated: ``[T, B]`` bool, steps a time limit ended (the game did not); their
            targets bootstrap from ``final_values`` (see :mod:`learner.vtrace`). Optional.
        final_values: ``[T, B]`` value of the observation a time limit hid (detached).
        policy_logp: ``[T, B]`` log-prob of each action under the actor's unmixed policy: the
            PPO ratio's reference. None: ``behaviour_logp`` (no exploration noise).

    Returns:
        ``(loss, stats)``: the scalar loss to minimise,
        ``policy_loss + vf_coef * value_loss - ent_coef * entropy``, and a dict of python
        floats with keys :data:`STAT_KEYS`.

    Raises:
        ValueError: on inconsistent shapes or non-integer actions.
    """
    if logits.dim() != 3:
        raise ValueError(f"logits must be [T, B, A], got shape {tuple(logits.shape)}")
    tb = logits.shape[:2]
    for name, t in (("values", values), ("actions", actions), ("behaviour_logp", behaviour_logp),
                    ("policy_logp", behaviour_logp if policy_logp is None else policy_logp)):
        if t.shape != tb:
            raise ValueError(f"{name} must be [T, B] = {tuple(tb)}, got {tuple(t.shape)}")
    if actions.dtype != torch.int64:
        raise ValueError(f"actions must be int64, got {actions.dtype}")

    if action_mask is not None and action_mask.shape != logits.shape:
        raise ValueError(f"action_mask must be [T, B, A] = {tuple(logits.shape)}, got {tuple(action_mask.shape)}")
    log_probs = F.log_softmax(mask_logits(logits, action_mask), dim=-1)
    logp = log_probs.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    log_rhos = (logp - behaviour_logp).detach()
    # the surrogate's ratio: pi over the actor's own policy, not over the epsilon mixture
    log_ratio = logp - (behaviour_logp if policy_logp is None else policy_logp)

    # rewards/discounts/bootstrap shapes are validated inside V-trace.
    vtrace = from_importance_weights(
        log_rhos=log_rhos,
        discounts=discounts,
        rewards=rewards,
        values=values.detach(),
        bootstrap_value=bootstrap_value.detach(),
        clip_rho_threshold=cfg.clip_rho,
        clip_pg_rho_threshold=cfg.clip_pg_rho,
        lambda_=cfg.lambda_,
        truncated=truncated,
        final_values=None if final_values is None else final_values.detach(),
    )

    adv = vtrace.pg_advantages
    if cfg.normalize_advantages and adv.numel() > 1:
        # Over this call's [T, B] (one minibatch). Population std so a constant minibatch gives
        # zero advantages instead of NaN.
        def standardise(x: Tensor) -> Tensor:
            return (x - x.mean()) / (x.std(correction=0) + 1e-8)

        if policy_logp is None:
            adv = standardise(adv)
        else:  # a mixture: the baseline goes under the exploration weight only (module docstring)
            drift = log_ratio.detach().exp()  # pi over the actor's own policy
            w = (policy_logp - behaviour_logp).exp()
            if cfg.clip_pg_rho is not None:
                drift, w = drift.clamp(max=cfg.clip_pg_rho), w.clamp(max=cfg.clip_pg_rho)
            adv = w * standardise(drift * vtrace.pg_deltas)

    ratio = torch.exp(log_ratio)
    surr1 = ratio * adv
    surr2 = ratio.clamp(1.0 - cfg.clip_eps, 1.0 + cfg.clip_eps) * adv
    surrogate = torch.min(surr1, surr2)
    if cfg.dual_clip is not None:
        surrogate = torch.where(adv < 0, torch.max(surrogate, cfg.dual_clip * adv), surrogate)
    policy_loss = -surrogate.mean()

    value_loss = 0.5 * (vtrace.vs - values).pow(2).mean()

    # Entropy from log-probs directly; same as Categorical(logits).entropy() without validation.
    entropy = -(log_probs.exp() * log_probs).sum(-1).mean()

    loss = policy_loss + cfg.vf_coef * value_loss - cfg.ent_coef * entropy

    with torch.no_grad():
        bound = STAT_LOG_RATIO_BOUND
        kl_log_ratio = log_ratio.detach().clamp(-bound, bound)
        approx_kl = (kl_log_ratio.exp() - 1.0 - kl_log_ratio).mean()  # Schulman's k3, >= 0
        clipfrac = ((ratio - 1.0).abs() > cfg.clip_eps).to(ratio.dtype).mean()
        rhos = log_rhos.clamp(-bound, bound).exp()
        # One device->host transfer for all stats instead of one sync per .item().
        values_list = torch.stack(
            [policy_loss, value_loss, entropy, approx_kl, clipfrac, rhos.mean(), rhos.flatten().median(), loss]
        ).tolist()
    stats = dict(zip(STAT_KEYS, values_list, strict=True))
    return loss, stats
