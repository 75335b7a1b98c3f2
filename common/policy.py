"""Action masking shared by actor, learner loss and evaluation.

Illegal actions get the logit ``MASK_LOGIT`` before the softmax: a large *finite* negative, so
their probability is exactly 0 in float32 while ``p * log p`` stays 0 (with -inf it would be
NaN), and the entropy and log-probabilities of the masked policy count legal actions only.
"""

from __future__ import annotations

import numpy as np
import torch

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
