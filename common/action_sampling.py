"""Acting from policy logits, one home for actor, learner loss, evaluation and anything that plays.

Masking: illegal actions get the logit ``MASK_LOGIT`` before the softmax: a large *finite*
negative, so their probability is exactly 0 in float32 while ``p * log p`` stays 0 (with -inf it
would be NaN), and the entropy and log-probabilities of the masked policy count legal actions only.

Sampling: `sample_action` turns the logits of one observation into an action and the
log-probability of the distribution it was drawn from (the behaviour log-probability V-trace needs);
`sample_actions` does the same for a batch (the actor host: one row per emulator, each with its own
uniform draw and epsilon). Both draw by the same inverse CDF.
"""

from __future__ import annotations

import numpy as np
import torch

from common.protocol import PROB_FLOOR

MASK_LOGIT = -1e9


def mask_logits(logits: torch.Tensor, action_mask: torch.Tensor | None) -> torch.Tensor:
    """``logits`` with illegal actions (``action_mask`` False) set to MASK_LOGIT; None: unchanged."""
    if action_mask is None:
        return logits
    return torch.where(action_mask, logits, torch.full_like(logits, MASK_LOGIT))


def mask_logits_np(logits: np.ndarray, action_mask: np.ndarray | None) -> np.ndarray:
    """numpy twin of :func:`mask_logits`."""
    if action_mask is None:
        return logits
    return np.where(action_mask, logits, np.asarray(MASK_LOGIT, logits.dtype))


def action_probs(logits: np.ndarray | torch.Tensor, epsilon: float | np.ndarray = 0.0,
                 action_mask: np.ndarray | None = None) -> np.ndarray:
    """Softmax in float64 over the last axis, mixed with `epsilon` of uniform noise (a number, or
    one per row of a batch); with an `action_mask`, of the masked logits, and the noise spread
    over the legal actions only."""
    if isinstance(logits, torch.Tensor):
        logits = logits.detach().to("cpu", torch.float64).numpy()
    z = mask_logits_np(np.asarray(logits, dtype=np.float64), action_mask)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    probs = e / e.sum(axis=-1, keepdims=True)
    eps = np.asarray(epsilon, dtype=np.float64)
    if np.any(eps > 0.0):  # behaviour = mixture; V-trace corrects for it on the learner
        eps = eps.reshape(-1, 1) if eps.ndim else eps
        legal = np.ones_like(probs) if action_mask is None else np.asarray(action_mask, np.float64)
        probs = (1.0 - eps) * probs + eps * legal / legal.sum(axis=-1, keepdims=True)
    return probs


def _inverse_cdf(probs: np.ndarray, uniforms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row by row: the first action whose cumulative probability exceeds u * total (numpy's
    searchsorted side="right"), and the log of its probability (floored at PROB_FLOOR, the learner's bound too)."""
    cdf = np.cumsum(probs, axis=-1)
    actions = np.minimum((cdf <= uniforms.reshape(-1, 1) * cdf[:, -1:]).sum(axis=-1), probs.shape[-1] - 1)
    picked = probs[np.arange(len(actions)), actions]
    return actions, np.log(np.maximum(picked, PROB_FLOOR))


def sample_action(logits: np.ndarray | torch.Tensor, rng: np.random.Generator, *,
                  greedy: bool = False, epsilon: float = 0.0,
                  action_mask: np.ndarray | None = None) -> tuple[int, float]:
    """One action from the logits of one observation ([n_actions]) and its log-probability.

    Sampled by inverse CDF with one `rng.random()` draw (so a seeded Generator repeats the same
    actions), or the argmax with `greedy` (no draw). The log-probability is that of the
    distribution the action came from: the policy mixed with `epsilon` of uniform noise. An
    `action_mask` (bool [n_actions]) restricts both to the legal actions.
    """
    probs = action_probs(logits, epsilon, action_mask)
    if probs.ndim != 1:
        raise ValueError(f"sample_action takes the logits of one observation, got shape {probs.shape}")
    if greedy:
        action = int(np.argmax(probs))
        return action, float(np.log(max(probs[action], PROB_FLOOR)))
    actions, logp = _inverse_cdf(probs[None], np.array([rng.random()]))
    return int(actions[0]), float(logp[0])


def own_logp(logits: np.ndarray | torch.Tensor, actions: np.ndarray,
             action_mask: np.ndarray | None = None) -> np.ndarray:
    """float32 log-probabilities of `actions` ([B]) under the unmixed policy of `logits`
    ([B, n_actions]), floored like the behaviour's: what an epsilon actor's PPO ratio is measured
    against (the mixture stays the behaviour for V-trace)."""
    probs = action_probs(logits, 0.0, action_mask)
    picked = probs[np.arange(len(actions)), np.asarray(actions, dtype=np.int64)]
    return np.log(np.maximum(picked, PROB_FLOOR)).astype(np.float32)


def sample_actions(logits: np.ndarray | torch.Tensor, uniforms: np.ndarray,
                   epsilon: float | np.ndarray = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Actions (int32) and behaviour log-probabilities (float32) for a batch of logits
    [B, n_actions]: row i is drawn with `uniforms[i]` (from that emulator's own seeded
    generator, so its actions depend on its seed and logits only, never on the batch it was in)
    and mixed with its `epsilon` (a number or one per row)."""
    probs = action_probs(logits, epsilon)
    actions, logp = _inverse_cdf(probs, np.asarray(uniforms, dtype=np.float64))
    return actions.astype(np.int32), logp.astype(np.float32)
